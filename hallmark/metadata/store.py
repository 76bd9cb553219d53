"""Registry metadata operations; with :mod:`.history`, the only place that writes SQL for the registry.

Each public method is one short transaction. The hot read paths (manifest by tag,
blob stat) are single statements; on SQLite they and the upload writes take the raw
fast path in :mod:`hallmark.metadata.sqlite_fast`. Tag history, referrers and the garbage
collection's manifest queries are in :mod:`hallmark.metadata.history` (inherited).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from hallmark.metadata import sqlite_fast as fast_sql
from hallmark.metadata.history import HistoryQueries, record_tag_event
from hallmark.metadata.sqlite_fast import FastSqlite, SqliteWriteLock, parse_sqlite_ts, sqlite_ts
from hallmark.metadata.tables import blobs, manifest_refs, manifests, repo_blobs, repositories, tags, uploads


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TagImmutable(Exception):
    def __init__(self, repo: str, tag: str) -> None:
        super().__init__(f"tag {tag!r} in {repo} is immutable")


class MissingReferences(Exception):
    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("manifest references unknown content: " + ", ".join(missing))
        self.missing = list(missing)


@dataclass(frozen=True)
class ManifestRecord:
    digest: str
    media_type: str
    content: bytes
    artifact_type: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class UploadRecord:
    id: str
    repo_name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed: bool = False
    principal: str | None = None


class MetadataStore(HistoryQueries):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite allows one writer: queue writers here instead of in SQLite's sleeping busy handler.
        self._write_lock: SqliteWriteLock | None = (
            SqliteWriteLock(engine.url.database) if self.dialect == "sqlite" else None
        )
        # Local SQLite reads take microseconds: callers may run them on the event loop directly.
        self.inline_reads = self.dialect == "sqlite"
        database = engine.url.database if self.dialect == "sqlite" else None
        self._sqlite = (
            FastSqlite(database, self._write_lock)
            if database not in (None, "", ":memory:") and self._write_lock is not None
            else None
        )

    def sqlite_conn(self) -> sqlite3.Connection | None:
        """This thread's raw connection of the SQLite fast path, for fixed-SQL reads on hot paths
        (a few microseconds instead of ~30 through SQLAlchemy); None on PostgreSQL."""
        return self._sqlite.conn() if self._sqlite is not None else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (behind the process-wide SQLite writer lock on SQLite)."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    # -- helpers -----------------------------------------------------------------
    def _upsert_upload(
        self,
        conn: Connection,
        upload_id: str,
        repo: str,
        created: dt.datetime,
        closed: bool,
        principal: str | None = None,
    ) -> None:
        ins = postgresql.insert(uploads) if self.dialect == "postgresql" else sqlite.insert(uploads)
        now = utcnow()
        stmt = ins.values(
            id=upload_id, repo_name=repo, created_at=created, updated_at=now, closed=closed, principal=principal
        )
        conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"updated_at": now, "closed": closed}))

    def _insert_ignore(self, table: Any, index: list[str]) -> Any:
        ins = postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)
        return ins.on_conflict_do_nothing(index_elements=index)

    def repo_id(self, conn: Connection, name: str, create: bool = False) -> int | None:
        rid = conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar()
        if rid is None and create:
            conn.execute(
                self._insert_ignore(repositories, ["name"]).values(name=name, immutable_tags=False, created_at=utcnow())
            )
            rid = conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar_one()
        return rid

    # -- repositories --------------------------------------------------------------
    def repo_exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return self.repo_id(conn, name) is not None

    def list_repositories(self, n: int | None = None, last: str | None = None) -> list[str]:
        q = select(repositories.c.name).order_by(repositories.c.name)
        if last:
            q = q.where(repositories.c.name > last)
        if n is not None:
            q = q.limit(n)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def repository_info(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(repositories).where(repositories.c.name == name)).mappings().first()
            if row is None:
                return None
            ntags = conn.execute(select(func.count()).select_from(tags).where(tags.c.repo_id == row["id"]))
            return {
                "name": row["name"],
                "immutable_tags": bool(row["immutable_tags"]),
                "created_at": row["created_at"],
                "tag_count": ntags.scalar_one(),
            }

    def set_repository_options(self, name: str, immutable_tags: bool) -> bool:
        """Change an existing repository's options; False when there is no such repository."""
        with self.transaction() as conn:
            rid = self.repo_id(conn, name)
            if rid is None:
                return False
            conn.execute(update(repositories).where(repositories.c.id == rid).values(immutable_tags=immutable_tags))
            return True

    # -- blobs -----------------------------------------------------------------------
    def link_blob(self, repo: str, digest: str, size: int, finished_upload: str | None = None) -> None:
        """Link a stored blob into ``repo``; ``finished_upload`` becomes a tombstone in the same step."""
        self.link_blobs([(repo, digest, size, finished_upload)])

    def link_blobs(self, links: Sequence[tuple[str, str, int, str | None]]) -> None:
        """Several :meth:`link_blob` calls in one transaction (group commit of small pushes)."""
        if not links:
            return
        now = utcnow()
        if self._sqlite is not None:
            ts = sqlite_ts(now)
            with self._sqlite.tx() as c:
                for repo, digest, size, finished_upload in links:
                    if finished_upload is not None:
                        c.execute(fast_sql.CLOSE_UPLOAD_SQL, (finished_upload, repo, ts, ts))
                    c.execute(fast_sql.ADD_REPO_SQL, (repo, ts))
                    rid = c.execute(fast_sql.REPO_ID_SQL, (repo,)).fetchone()[0]
                    c.execute(fast_sql.ADD_BLOB_SQL, (digest, size, ts))
                    c.execute(fast_sql.LINK_BLOB_SQL, (rid, digest, ts))
            return
        with self.transaction() as conn:
            for repo, digest, size, finished_upload in links:
                if finished_upload is not None:
                    self._upsert_upload(conn, finished_upload, repo, now, closed=True)
                rid = self.repo_id(conn, repo, create=True)
                conn.execute(self._insert_ignore(blobs, ["digest"]).values(digest=digest, size=size, created_at=now))
                conn.execute(
                    self._insert_ignore(repo_blobs, ["repo_id", "digest"]).values(
                        repo_id=rid, digest=digest, created_at=now
                    )
                )

    def blob_size(self, repo: str, digest: str) -> int | None:
        if self._sqlite is not None:
            row = self._sqlite.conn().execute(fast_sql.BLOB_SIZE_SQL, (repo, digest)).fetchone()
            return int(row[0]) if row else None
        q = (
            select(blobs.c.size)
            .select_from(repo_blobs.join(blobs).join(repositories))
            .where(repositories.c.name == repo, repo_blobs.c.digest == digest)
        )
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def unlink_blob(self, repo: str, digest: str) -> bool:
        with self.transaction() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return False
            res = conn.execute(delete(repo_blobs).where(repo_blobs.c.repo_id == rid, repo_blobs.c.digest == digest))
            return res.rowcount > 0

    def unreferenced_links(self, before: dt.datetime) -> list[tuple[str, str]]:
        """(repository, digest) links older than ``before`` that no manifest of the repository uses."""
        q = (
            select(repositories.c.name, repo_blobs.c.digest)
            .select_from(repo_blobs.join(repositories))
            .where(
                repo_blobs.c.created_at < before,
                ~select(manifest_refs.c.ref_digest)
                .where(
                    manifest_refs.c.repo_id == repo_blobs.c.repo_id, manifest_refs.c.ref_digest == repo_blobs.c.digest
                )
                .exists(),
            )
            .order_by(repositories.c.name, repo_blobs.c.digest)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    def unlink_blobs(self, pairs: list[tuple[str, str]]) -> int:
        """Drop links that are still unused (re-checked in the same transaction)."""
        n = 0
        with self.transaction() as conn:
            for repo, digest in pairs:
                rid = conn.execute(select(repositories.c.id).where(repositories.c.name == repo)).scalar()
                if rid is None:
                    continue
                used = conn.execute(
                    select(manifest_refs.c.ref_digest).where(
                        manifest_refs.c.repo_id == rid, manifest_refs.c.ref_digest == digest
                    )
                ).first()
                if used is None:
                    n += conn.execute(
                        delete(repo_blobs).where(repo_blobs.c.repo_id == rid, repo_blobs.c.digest == digest)
                    ).rowcount
        return n

    def repositories_linking(self, digest: str) -> list[str]:
        q = select(repositories.c.name).select_from(repo_blobs.join(repositories)).where(repo_blobs.c.digest == digest)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def unreferenced_blobs(self, before: dt.datetime | None = None) -> list[str]:
        """Blobs no repository links any more (garbage-collection candidates)."""
        q = select(blobs.c.digest).where(
            ~select(repo_blobs.c.digest).where(repo_blobs.c.digest == blobs.c.digest).exists()
        )
        if before is not None:
            q = q.where(blobs.c.created_at < before)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def forget_blob(self, digest: str) -> bool:
        """Delete the blob row if still unlinked (re-checked in the transaction); True when deleted."""
        with self.transaction() as conn:
            linked = conn.execute(select(repo_blobs.c.digest).where(repo_blobs.c.digest == digest)).first()
            if linked is not None:
                return False
            return conn.execute(delete(blobs).where(blobs.c.digest == digest)).rowcount > 0

    # -- manifests ---------------------------------------------------------------------
    def put_manifest(
        self,
        repo: str,
        record: ManifestRecord,
        blob_refs: Iterable[str],
        manifest_refs_: Iterable[str],
        tag: str | None,
        annotations: str | None = None,
        actor: str = "registry",
    ) -> None:
        """Store a manifest (and point ``tag`` at it); a tag's creation or move goes into its history."""
        blob_refs = list(dict.fromkeys(blob_refs))
        child_refs = list(dict.fromkeys(manifest_refs_))
        now = utcnow()
        for attempt in range(3):
            try:
                with self.transaction() as conn:
                    rid = self.repo_id(conn, repo, create=True)
                    assert rid is not None
                    missing: list[str] = []
                    if blob_refs:
                        have = set(
                            conn.execute(
                                select(repo_blobs.c.digest).where(
                                    repo_blobs.c.repo_id == rid, repo_blobs.c.digest.in_(blob_refs)
                                )
                            ).scalars()
                        )
                        missing += [d for d in blob_refs if d not in have]
                    if child_refs:
                        have = set(
                            conn.execute(
                                select(manifests.c.digest).where(
                                    manifests.c.repo_id == rid, manifests.c.digest.in_(child_refs)
                                )
                            ).scalars()
                        )
                        missing += [d for d in child_refs if d not in have]
                    if missing:
                        raise MissingReferences(missing)
                    previous: str | None = None
                    if tag is not None:
                        row = conn.execute(
                            select(repositories.c.immutable_tags, tags.c.digest)
                            .select_from(
                                repositories.outerjoin(
                                    tags, and_(tags.c.repo_id == repositories.c.id, tags.c.name == tag)
                                )
                            )
                            .where(repositories.c.id == rid)
                        ).first()
                        previous = row[1] if row is not None else None
                        if row is not None and row[0] and row[1] is not None and row[1] != record.digest:
                            raise TagImmutable(repo, tag)
                    exists = conn.execute(
                        select(manifests.c.digest).where(
                            manifests.c.repo_id == rid, manifests.c.digest == record.digest
                        )
                    ).first()
                    if not exists:
                        conn.execute(
                            manifests.insert().values(
                                repo_id=rid,
                                digest=record.digest,
                                media_type=record.media_type,
                                artifact_type=record.artifact_type,
                                size=len(record.content),
                                content=record.content,
                                subject_digest=record.subject,
                                annotations=annotations,
                                created_at=now,
                            )
                        )
                        refs = [
                            {"repo_id": rid, "digest": record.digest, "ref_digest": d, "kind": "blob"}
                            for d in blob_refs
                        ]
                        refs += [
                            {"repo_id": rid, "digest": record.digest, "ref_digest": d, "kind": "manifest"}
                            for d in child_refs
                        ]
                        if refs:
                            conn.execute(self._insert_ignore(manifest_refs, ["repo_id", "digest", "ref_digest"]), refs)
                    if tag is not None:
                        res = conn.execute(
                            update(tags)
                            .where(tags.c.repo_id == rid, tags.c.name == tag)
                            .values(digest=record.digest, updated_at=now)
                        )
                        if res.rowcount == 0:
                            conn.execute(
                                tags.insert().values(repo_id=rid, name=tag, digest=record.digest, updated_at=now)
                            )
                        if previous != record.digest:
                            action = "push" if previous is None else "move"
                            record_tag_event(conn, repo, tag, previous, record.digest, action, actor, now)
                return
            except IntegrityError:
                # A concurrent push of the same manifest or tag won the race; re-check and retry.
                if attempt == 2:
                    raise

    def get_manifest(self, repo: str, reference: str, by_digest: bool) -> ManifestRecord | None:
        if self._sqlite is not None:
            sql = fast_sql.BY_DIGEST_SQL if by_digest else fast_sql.BY_TAG_SQL
            row = self._sqlite.conn().execute(sql, (repo, reference)).fetchone()
            if row is None:
                return None
            return ManifestRecord(row[0], row[1], bytes(row[2]), row[3], row[4])
        cols = (
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.content,
            manifests.c.artifact_type,
            manifests.c.subject_digest,
        )
        if by_digest:
            q = (
                select(*cols)
                .select_from(manifests.join(repositories))
                .where(repositories.c.name == repo, manifests.c.digest == reference)
            )
        else:
            q = (
                select(*cols)
                .select_from(
                    tags.join(repositories).join(
                        manifests, and_(manifests.c.repo_id == tags.c.repo_id, manifests.c.digest == tags.c.digest)
                    )
                )
                .where(repositories.c.name == repo, tags.c.name == reference)
            )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        return ManifestRecord(
            digest=row[0], media_type=row[1], content=bytes(row[2]), artifact_type=row[3], subject=row[4]
        )

    def delete_manifest(self, repo: str, digest: str, actor: str = "registry") -> bool:
        """Delete a manifest and the tags on it (each recorded in its tag's history)."""
        now = utcnow()
        with self.transaction() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return False
            res = conn.execute(delete(manifests).where(manifests.c.repo_id == rid, manifests.c.digest == digest))
            if res.rowcount == 0:
                return False
            conn.execute(delete(manifest_refs).where(manifest_refs.c.repo_id == rid, manifest_refs.c.digest == digest))
            held = conn.execute(select(tags.c.name).where(tags.c.repo_id == rid, tags.c.digest == digest)).scalars()
            for tag in list(held):
                record_tag_event(conn, repo, tag, digest, None, "delete", actor, now)
            conn.execute(delete(tags).where(tags.c.repo_id == rid, tags.c.digest == digest))
            return True

    def delete_tag(
        self, repo: str, tag: str, actor: str = "registry", action: str = "delete", expect: str | None = None
    ) -> bool:
        """Remove a tag, recorded in its history as ``action``; with ``expect``, only while it still
        points at that digest (expiration and retention never remove a tag that moved meanwhile)."""
        now = utcnow()
        with self.transaction() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return False
            cond = [tags.c.repo_id == rid, tags.c.name == tag]
            if expect is not None:
                cond.append(tags.c.digest == expect)
            old = conn.execute(select(tags.c.digest).where(*cond)).scalar()
            if old is None:
                return False
            res = conn.execute(delete(tags).where(*cond))
            if res.rowcount == 0:
                return False
            record_tag_event(conn, repo, tag, old, None, action, actor, now)
            return True

    def tag_is_immutable(self, repo: str) -> bool:
        with self.engine.connect() as conn:
            v = conn.execute(select(repositories.c.immutable_tags).where(repositories.c.name == repo)).scalar()
            return bool(v)

    def list_tags(self, repo: str, n: int | None = None, last: str | None = None) -> list[str] | None:
        with self.engine.connect() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return None
            q = select(tags.c.name).where(tags.c.repo_id == rid).order_by(tags.c.name)
            if last:
                q = q.where(tags.c.name > last)
            if n is not None:
                q = q.limit(n)
            return list(conn.execute(q).scalars())

    def tags_for(self, repo: str, digest: str) -> list[str]:
        q = (
            select(tags.c.name)
            .select_from(tags.join(repositories))
            .where(repositories.c.name == repo, tags.c.digest == digest)
            .order_by(tags.c.name)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    # -- upload sessions -------------------------------------------------------------------
    def get_upload(self, upload_id: str) -> UploadRecord | None:
        if self._sqlite is not None:
            r = self._sqlite.conn().execute(fast_sql.GET_UPLOAD_SQL, (upload_id,)).fetchone()
            if r is None:
                return None
            return UploadRecord(r[0], r[1], parse_sqlite_ts(r[2]), parse_sqlite_ts(r[3]), bool(r[4]))
        with self.engine.connect() as conn:
            row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        return UploadRecord(*row) if row else None

    def keep_upload(self, upload_id: str, repo: str, created: dt.datetime, principal: str | None = None) -> None:
        """Record (or refresh) an open session once data has been written to it; the first writer owns it."""
        if self._sqlite is not None:
            with self._sqlite.tx() as c:
                c.execute(
                    fast_sql.KEEP_UPLOAD_SQL, (upload_id, repo, sqlite_ts(created), sqlite_ts(utcnow()), principal)
                )
            return
        with self.transaction() as conn:
            self._upsert_upload(conn, upload_id, repo, created, closed=False, principal=principal)

    def open_uploads(self, principal: str, since: dt.datetime) -> int:
        """Open sessions holding data that ``principal`` started, touched since ``since`` (not expired)."""
        if self._sqlite is not None:
            row = self._sqlite.conn().execute(fast_sql.OPEN_UPLOADS_SQL, (principal, sqlite_ts(since))).fetchone()
            return int(row[0])
        q = (
            select(func.count())
            .select_from(uploads)
            .where(uploads.c.principal == principal, uploads.c.closed.is_(False), uploads.c.updated_at >= since)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def close_upload(self, upload_id: str, repo: str) -> None:
        """Turn a session into a tombstone: its id is refused until it expires."""
        with self.transaction() as conn:
            self._upsert_upload(conn, upload_id, repo, utcnow(), closed=True)

    def delete_upload(self, upload_id: str) -> bool:
        with self.transaction() as conn:
            return conn.execute(delete(uploads).where(uploads.c.id == upload_id)).rowcount > 0

    def expired_uploads(self, before: dt.datetime) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(uploads.c.id).where(uploads.c.updated_at < before)).scalars())

    def upload_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(uploads.c.id)).scalars())

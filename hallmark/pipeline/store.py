"""SQL for pipeline state: image status, index cache, reports, advisory sets and the event log."""

from __future__ import annotations

from typing import Any

import orjson
import zstandard
from sqlalchemy import and_, delete, or_, select, update

from hallmark.discovery.packages import forget_image as forget_packages
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import state_versions
from hallmark.pipeline.active_set import set_meta
from hallmark.pipeline.finding_rows import forget_findings
from hallmark.pipeline.findings import of_summary
from hallmark.pipeline.tables import advisory_sets, events, images, index_cache, reports, vex_documents
from hallmark.provenance.tables import provenance

_ZC = zstandard.ZstdCompressor(level=6)


def pack(doc: Any) -> bytes:
    return _ZC.compress(orjson.dumps(doc))


def unpack(blob: bytes) -> Any:
    return orjson.loads(zstandard.ZstdDecompressor().decompress(blob))


class DbIndexCache:
    """:class:`hallmark.index.IndexCache` in the metadata database (shared by all replicas and workers)."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def get(self, kind: str, version: str, digest: str) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = conn.execute(
                select(index_cache.c.doc).where(
                    index_cache.c.kind == kind, index_cache.c.version == version, index_cache.c.digest == digest
                )
            ).first()
        return unpack(bytes(row[0])) if row else None

    def put(self, kind: str, version: str, digest: str, doc: dict[str, Any]) -> None:
        data = pack(doc)
        with self.meta.transaction() as conn:
            conn.execute(
                delete(index_cache).where(
                    index_cache.c.kind == kind, index_cache.c.version == version, index_cache.c.digest == digest
                )
            )
            conn.execute(
                index_cache.insert().values(kind=kind, version=version, digest=digest, doc=data, created_at=utcnow())
            )

    def get_many(self, kind: str, version: str, digests: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.meta.engine.connect() as conn:
            for i in range(0, len(digests), 500):
                rows = conn.execute(
                    select(index_cache.c.digest, index_cache.c.doc).where(
                        index_cache.c.kind == kind,
                        index_cache.c.version == version,
                        index_cache.c.digest.in_(digests[i : i + 500]),
                    )
                )
                for digest, blob in rows:
                    out[digest] = unpack(bytes(blob))
        return out


class PipelineStore:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    # -- images ---------------------------------------------------------------------------
    def set_image(self, repo: str, digest: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        for key in ("distro", "summary"):
            if key in values and values[key] is not None and not isinstance(values[key], str):
                values[key] = orjson.dumps(values[key]).decode()
        with self.meta.transaction() as conn:
            res = conn.execute(
                update(images).where(images.c.repo_name == repo, images.c.digest == digest).values(**values)
            )
            if res.rowcount == 0:
                values.setdefault("status", "queued")
                conn.execute(images.insert().values(repo_name=repo, digest=digest, **values))

    def get_image(self, repo: str, digest: str) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = (
                conn.execute(select(images).where(images.c.repo_name == repo, images.c.digest == digest))
                .mappings()
                .first()
            )
        return _image_row(row) if row else None

    def list_images(self, repo: str | None = None) -> list[dict[str, Any]]:
        q = select(images).order_by(images.c.repo_name, images.c.updated_at.desc())
        if repo is not None:
            q = q.where(images.c.repo_name == repo)
        with self.meta.engine.connect() as conn:
            return [_image_row(r) for r in conn.execute(q).mappings()]

    def rematch_candidates(self) -> list[dict[str, Any]]:
        """Every image with a stored inventory: repository, digest and current summary."""
        q = select(images.c.repo_name, images.c.digest, images.c.summary).where(
            images.c.status.in_(["indexed", "scanning", "done"])
        )
        with self.meta.engine.connect() as conn:
            return [
                {"repository": r[0], "digest": r[1], "summary": orjson.loads(r[2]) if r[2] else None}
                for r in conn.execute(q)
            ]

    def refresh_summaries(self, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Write many summaries in one transaction (re-matching thousands of unchanged images)."""
        if not items:
            return
        now = utcnow()
        with self.meta.transaction() as conn:
            for repo, digest, summary in items:
                conn.execute(
                    update(images)
                    .where(images.c.repo_name == repo, images.c.digest == digest)
                    .values(
                        summary=orjson.dumps(summary).decode(),
                        advisory_set=summary.get("advisory_set"),
                        status="done",
                        updated_at=now,
                    )
                )

    def forget_image(self, repo: str, digest: str) -> None:
        """The manifest was deleted or garbage-collected: its status, reports and finding rows go, and
        its provenance once no repository holds the digest (provenance describes content, not a name)."""
        with self.meta.transaction() as conn:
            conn.execute(delete(images).where(images.c.repo_name == repo, images.c.digest == digest))
            conn.execute(delete(reports).where(reports.c.repo_name == repo, reports.c.digest == digest))
            forget_findings(conn, repo, digest)
            forget_packages(conn, repo, digest)
            if conn.execute(select(images.c.digest).where(images.c.digest == digest).limit(1)).first() is None:
                conn.execute(delete(provenance).where(provenance.c.digest == digest))

    # -- reports ----------------------------------------------------------------------------
    def put_report(
        self,
        repo: str,
        digest: str,
        kind: str,
        doc: Any,
        artifact_digest: str | None = None,
        signature_digest: str | None = None,
    ) -> None:
        data = pack(doc)
        with self.meta.transaction() as conn:
            conn.execute(
                delete(reports).where(reports.c.repo_name == repo, reports.c.digest == digest, reports.c.kind == kind)
            )
            conn.execute(
                reports.insert().values(
                    repo_name=repo,
                    digest=digest,
                    kind=kind,
                    doc=data,
                    artifact_digest=artifact_digest,
                    signature_digest=signature_digest,
                    created_at=utcnow(),
                )
            )

    def set_report_signature(self, repo: str, digest: str, kind: str, signature_digest: str) -> None:
        with self.meta.transaction() as conn:
            conn.execute(
                update(reports)
                .where(reports.c.repo_name == repo, reports.c.digest == digest, reports.c.kind == kind)
                .values(signature_digest=signature_digest)
            )

    def get_report(self, repo: str, digest: str, kind: str) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = (
                conn.execute(
                    select(reports).where(
                        reports.c.repo_name == repo, reports.c.digest == digest, reports.c.kind == kind
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return {
            "kind": row["kind"],
            "doc": unpack(bytes(row["doc"])),
            "artifact_digest": row["artifact_digest"],
            "signature_digest": row["signature_digest"],
            "created_at": row["created_at"],
        }

    def report_kinds(self, repo: str, digest: str) -> list[dict[str, Any]]:
        with self.meta.engine.connect() as conn:
            rows = conn.execute(
                select(reports.c.kind, reports.c.artifact_digest, reports.c.signature_digest, reports.c.created_at)
                .where(reports.c.repo_name == repo, reports.c.digest == digest)
                .order_by(reports.c.kind)
            ).mappings()
            return [_plain(r) for r in rows]

    # -- advisory sets --------------------------------------------------------------------------
    def add_advisory_set(self, blob_digest: str, sources: dict[str, Any]) -> int:
        """Record an imported set and make it the active one in the same transaction (the atomic switch);
        the ``advisories`` state version goes up with it, for caches on every replica."""
        with self.meta.transaction() as conn:
            conn.execute(update(advisory_sets).values(active=False))
            res = conn.execute(
                advisory_sets.insert().values(
                    blob_digest=blob_digest, sources=orjson.dumps(sources).decode(), active=True, created_at=utcnow()
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            now = utcnow()
            bumped = conn.execute(
                update(state_versions)
                .where(state_versions.c.name == "advisories")
                .values(version=state_versions.c.version + 1, updated_at=now)
            ).rowcount
            if not bumped:
                conn.execute(state_versions.insert().values(name="advisories", version=1, updated_at=now))
            return int(pk[0])

    def active_advisory_set(self) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = (
                conn.execute(
                    select(advisory_sets).where(advisory_sets.c.active.is_(True)).order_by(advisory_sets.c.id.desc())
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return set_meta(row["id"], row["blob_digest"], row["sources"], row["created_at"])

    def advisory_set_history(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.meta.engine.connect() as conn:
            rows = conn.execute(select(advisory_sets).order_by(advisory_sets.c.id.desc()).limit(limit)).mappings()
            return [
                {
                    "id": r["id"],
                    "blob_digest": r["blob_digest"],
                    "active": bool(r["active"]),
                    "sources": orjson.loads(r["sources"]),
                    "created_at": r["created_at"],
                }
                for r in rows
            ]

    # -- VEX -----------------------------------------------------------------------------------------
    def add_vex(self, repo: str | None, digest: str | None, doc: str, uploaded_by: str) -> int:
        with self.meta.transaction() as conn:
            res = conn.execute(
                vex_documents.insert().values(
                    repo_name=repo, digest=digest, doc=doc, uploaded_by=uploaded_by, created_at=utcnow()
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def vex_for(self, repo: str, digest: str) -> list[dict[str, Any]]:
        """Global documents and the ones for this image, oldest first."""
        q = (
            select(vex_documents)
            .where(
                or_(
                    and_(vex_documents.c.repo_name.is_(None), vex_documents.c.digest.is_(None)),
                    and_(vex_documents.c.repo_name == repo, vex_documents.c.digest == digest),
                )
            )
            .order_by(vex_documents.c.id)
        )
        with self.meta.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(q).mappings()]

    def list_vex(self, repo: str | None = None) -> list[dict[str, Any]]:
        q = select(vex_documents).order_by(vex_documents.c.id)
        if repo is not None:
            q = q.where(vex_documents.c.repo_name == repo)
        with self.meta.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(q).mappings()]

    def get_vex(self, vex_id: int) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = conn.execute(select(vex_documents).where(vex_documents.c.id == vex_id)).mappings().first()
        return _plain(row) if row else None

    def delete_vex(self, vex_id: int) -> bool:
        with self.meta.transaction() as conn:
            return conn.execute(delete(vex_documents).where(vex_documents.c.id == vex_id)).rowcount > 0

    # -- events -------------------------------------------------------------------------------------
    def add_event(self, type_: str, repo: str | None, digest: str | None, payload: dict[str, Any]) -> int:
        with self.meta.transaction() as conn:
            res = conn.execute(
                events.insert().values(
                    type=type_,
                    repo_name=repo,
                    digest=digest,
                    payload=orjson.dumps(payload).decode(),
                    created_at=utcnow(),
                )
            )
            pk = res.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def list_events(
        self, since_id: int = 0, limit: int = 100, type_: str | None = None, repo: str | None = None
    ) -> list[dict[str, Any]]:
        q = select(events).where(events.c.id > since_id).order_by(events.c.id).limit(limit)
        if type_:
            q = q.where(events.c.type == type_)
        if repo:
            q = q.where(events.c.repo_name == repo)
        with self.meta.engine.connect() as conn:
            return [
                {
                    "id": r["id"],
                    "type": r["type"],
                    "repository": r["repo_name"],
                    "digest": r["digest"],
                    "payload": orjson.loads(r["payload"]),
                    "created_at": r["created_at"],
                }
                for r in conn.execute(q).mappings()
            ]


def _plain(row: Any) -> dict[str, Any]:
    """Row mapping -> dict with plain ``str`` keys (SQLAlchemy hands out ``quoted_name`` keys)."""
    return {str(k): v for k, v in row.items()}


def _image_row(row: Any) -> dict[str, Any]:
    d = _plain(row)
    for key in ("distro", "summary"):
        if d.get(key):
            d[key] = orjson.loads(d[key])
    if isinstance(d.get("summary"), dict) and "combined" not in d["summary"]:
        d["summary"]["combined"] = of_summary(d["summary"])  # stored before the combined counts existed
    if isinstance(d.get("health"), str):  # shown through hallmark.lifecycle.health.view (current grade)
        d["health"] = orjson.loads(d["health"])
    if isinstance(d.get("lifecycle"), str):  # shown through hallmark.lifecycle.eol.view (current status)
        d["lifecycle"] = orjson.loads(d["lifecycle"])
    d["repository"] = d.pop("repo_name")
    return d

"""Tag history (the time machine) and the relations between manifests: referrers, the garbage
collection's graph.

Kept apart from :mod:`hallmark.metadata.store` so the hot manifest, blob and upload paths read
without the queries over ``tag_history`` that only restores, garbage collection and the referrers
API need. :class:`MetadataStore` inherits :class:`HistoryQueries`, so callers keep calling
``meta.restore_tag(...)``, ``meta.referrers(...)`` and so on.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, delete, func, select, update

from hallmark.lifecycle.tables import tag_history
from hallmark.metadata.tables import manifest_refs, manifests, repositories, tags


class TagRestoreRefused(Exception):
    """A restore that cannot happen; ``code`` says why (NAME_UNKNOWN, MANIFEST_UNKNOWN, NEVER_HELD,
    OUTSIDE_WINDOW, TAG_IMMUTABLE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TagChange:
    """A tag's move: ``old`` None when it was created; ``changed`` False when it already pointed there."""

    old: str | None
    new: str
    changed: bool


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: str | None


def record_tag_event(
    conn: Connection,
    repo: str,
    tag: str,
    old: str | None,
    new: str | None,
    action: str,
    actor: str,
    now: dt.datetime,
) -> None:
    """Record a tag's move or removal (the time machine) in the transaction that makes it."""
    conn.execute(
        tag_history.insert().values(
            repo_name=repo,
            tag=tag,
            old_digest=old,
            new_digest=new,
            action=action,
            actor=actor[:128],
            created_at=now,
        )
    )


class HistoryQueries(abc.ABC):
    """Tag history and manifest-relation queries of :class:`~hallmark.metadata.store.MetadataStore`,
    which provides the engine, its write transactions and the repository-id lookup."""

    engine: Engine

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction."""

    @abc.abstractmethod
    def repo_id(self, conn: Connection, name: str, create: bool = False) -> int | None:
        """The id of repository ``name`` (created first with ``create``), else None."""

    # -- the time machine ------------------------------------------------------------------
    def restore_tag(self, repo: str, tag: str, digest: str, held_since: dt.datetime, actor: str) -> TagChange:
        """Point ``tag`` back at ``digest``, which it must have held at ``held_since`` or later and whose
        manifest must still exist; checked and changed in one transaction (TagRestoreRefused otherwise)."""
        now = dt.datetime.now(dt.UTC)
        with self.transaction() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                raise TagRestoreRefused("NAME_UNKNOWN", f"repository {repo} not found")
            h = tag_history.c
            last = conn.execute(
                select(func.max(h.created_at)).where(
                    h.repo_name == repo, h.tag == tag, (h.old_digest == digest) | (h.new_digest == digest)
                )
            ).scalar()
            if last is None:
                raise TagRestoreRefused("NEVER_HELD", f"{repo}:{tag} never pointed at {digest}")
            if last.tzinfo is None:
                last = last.replace(tzinfo=dt.UTC)
            if last < held_since:
                raise TagRestoreRefused(
                    "OUTSIDE_WINDOW",
                    f"{repo}:{tag} last pointed at {digest} on {last:%Y-%m-%d %H:%M:%S} UTC, "
                    f"before the time-machine window (since {held_since:%Y-%m-%d %H:%M:%S} UTC)",
                )
            exists = conn.execute(
                select(manifests.c.digest).where(manifests.c.repo_id == rid, manifests.c.digest == digest)
            ).first()
            if exists is None:
                raise TagRestoreRefused("MANIFEST_UNKNOWN", f"manifest {digest} no longer exists in {repo}")
            row = conn.execute(
                select(repositories.c.immutable_tags, tags.c.digest)
                .select_from(
                    repositories.outerjoin(tags, and_(tags.c.repo_id == repositories.c.id, tags.c.name == tag))
                )
                .where(repositories.c.id == rid)
            ).first()
            old = row[1] if row is not None else None
            if old == digest:
                return TagChange(old, digest, False)
            if row is not None and row[0] and old is not None:
                raise TagRestoreRefused("TAG_IMMUTABLE", f"tag {tag!r} in {repo} is immutable")
            if old is None:
                conn.execute(tags.insert().values(repo_id=rid, name=tag, digest=digest, updated_at=now))
            else:
                conn.execute(
                    update(tags).where(tags.c.repo_id == rid, tags.c.name == tag).values(digest=digest, updated_at=now)
                )
            record_tag_event(conn, repo, tag, old, digest, "restore", actor, now)
            return TagChange(old, digest, True)

    # -- manifests left by their tags (garbage collection after the time-machine window) -------
    def dropped_manifests(self) -> dict[tuple[str, str], dt.datetime]:
        """Manifests that a tag once held and no tag points at now: (repository, digest) -> when a tag
        last left it. Manifests never tagged (pushed by digest, children, referrers) are not listed."""
        h = tag_history.c
        left: dict[tuple[str, str], dt.datetime] = {}
        with self.engine.connect() as conn:
            q = (
                select(h.repo_name, h.old_digest, func.max(h.created_at))
                .where(h.old_digest.is_not(None))
                .group_by(h.repo_name, h.old_digest)
            )
            for repo, digest, when in conn.execute(q):
                left[(repo, digest)] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            by_repo: dict[str, list[str]] = {}
            for repo, digest in left:
                by_repo.setdefault(repo, []).append(digest)
            out: dict[tuple[str, str], dt.datetime] = {}
            for repo, digests in sorted(by_repo.items()):
                rid = self.repo_id(conn, repo)
                if rid is None:
                    continue
                for part in _chunks(digests):
                    q2 = select(manifests.c.digest).where(
                        manifests.c.repo_id == rid,
                        manifests.c.digest.in_(part),
                        ~select(tags.c.name).where(tags.c.repo_id == rid, tags.c.digest == manifests.c.digest).exists(),
                    )
                    for digest in conn.execute(q2).scalars():
                        out[(repo, digest)] = left[(repo, digest)]
            return out

    def manifest_graph(self, repo: str) -> tuple[set[str], dict[str, str | None], dict[str, list[str]]]:
        """(tagged digests, digest -> subject, parent -> child manifests) of one repository."""
        with self.engine.connect() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return set(), {}, {}
            tagged = set(conn.execute(select(tags.c.digest).where(tags.c.repo_id == rid)).scalars())
            subjects = {
                str(d): s
                for d, s in conn.execute(
                    select(manifests.c.digest, manifests.c.subject_digest).where(manifests.c.repo_id == rid)
                )
            }
            children: dict[str, list[str]] = {}
            q = select(manifest_refs.c.digest, manifest_refs.c.ref_digest).where(
                manifest_refs.c.repo_id == rid, manifest_refs.c.kind == "manifest"
            )
            for parent, child in conn.execute(q):
                children.setdefault(parent, []).append(child)
            return tagged, subjects, children

    def forget_manifests(self, repo: str, digests: Iterable[str], held_before: dt.datetime) -> list[str]:
        """Delete these untagged manifests, re-checked in the deleting transaction: a manifest tagged
        again, held by a tag since ``held_before``, used by a manifest that stays, or referring to
        a subject that stays, is kept. Returns the digests deleted."""
        wanted = set(digests)
        if not wanted:
            return []
        h = tag_history.c
        with self.transaction() as conn:
            rid = self.repo_id(conn, repo)
            if rid is None:
                return []
            keep: set[str] = set()
            parents: dict[str, set[str]] = {}
            subjects: dict[str, str | None] = {}
            for part in _chunks(sorted(wanted)):
                keep |= set(
                    conn.execute(select(tags.c.digest).where(tags.c.repo_id == rid, tags.c.digest.in_(part))).scalars()
                )
                recent = select(h.old_digest, h.new_digest).where(
                    h.repo_name == repo, h.created_at >= held_before, h.old_digest.in_(part) | h.new_digest.in_(part)
                )
                for old, new in conn.execute(recent):
                    keep |= {old, new} & wanted
                for parent, child in conn.execute(
                    select(manifest_refs.c.digest, manifest_refs.c.ref_digest).where(
                        manifest_refs.c.repo_id == rid, manifest_refs.c.ref_digest.in_(part)
                    )
                ):
                    parents.setdefault(child, set()).add(parent)
                for d, subject in conn.execute(
                    select(manifests.c.digest, manifests.c.subject_digest).where(
                        manifests.c.repo_id == rid, manifests.c.digest.in_(part)
                    )
                ):
                    subjects[d] = subject
            going = set(subjects) - keep
            changed = True
            while changed:
                changed = False
                for d in sorted(going):
                    subject = subjects.get(d)
                    if any(p not in going for p in parents.get(d, ())) or (subject in wanted and subject not in going):
                        going.discard(d)
                        changed = True
            for part in _chunks(sorted(going)):
                conn.execute(delete(manifests).where(manifests.c.repo_id == rid, manifests.c.digest.in_(part)))
                conn.execute(
                    delete(manifest_refs).where(manifest_refs.c.repo_id == rid, manifest_refs.c.digest.in_(part))
                )
            return sorted(going)

    # -- referrers API -----------------------------------------------------------------------
    def referrers(self, repo: str, subject: str, artifact_type: str | None, n: int, last: str | None) -> list[Referrer]:
        q = (
            select(
                manifests.c.digest,
                manifests.c.media_type,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .select_from(manifests.join(repositories))
            .where(repositories.c.name == repo, manifests.c.subject_digest == subject)
            .order_by(manifests.c.digest)
            .limit(n)
        )
        if artifact_type is not None:
            q = q.where(manifests.c.artifact_type == artifact_type)
        if last:
            q = q.where(manifests.c.digest > last)
        with self.engine.connect() as conn:
            return [Referrer(*row) for row in conn.execute(q)]


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])

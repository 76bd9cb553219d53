"""Provenance rows: written per source (a re-ingest replaces that source's row), read best first.

Public queries (the explore API, the image API and the portal use these):

- ``provenance_for(meta, digest)`` -> every source's row for a digest (and, as ``via``, for the
  index that lists it or the manifests it lists), verified first, then signed-but-unverified,
  then CI, then unsigned statements, annotations and labels;
- ``summary_for(meta, digest)`` / ``summaries(meta, digests)`` -> one merged answer per digest;
- ``digests_built_from(meta, source_repo, revision=None)`` -> the digests a repository built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import and_, delete, or_, select

from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifest_refs, manifests, repositories
from hallmark.provenance.facts import ANNOTATION, CI, LABEL, Source, normalise_repo
from hallmark.provenance.tables import provenance

FIELDS = ("source_repo", "revision", "pipeline", "run_id", "run_url", "builder_id")
MAX_RELATED = 64
_CHUNK = 500


def record(meta: MetadataStore, repo: str | None, sources: Sequence[Source]) -> int:
    """Write sources in one transaction; each replaces the row of the same (digest, kind, origin)."""
    if not sources:
        return 0
    now = utcnow()
    with meta.transaction() as conn:
        for s in sources:
            conn.execute(
                delete(provenance).where(
                    provenance.c.digest == s.digest, provenance.c.kind == s.kind, provenance.c.origin == s.origin
                )
            )
            conn.execute(
                provenance.insert().values(
                    digest=s.digest,
                    repo_name=repo,
                    kind=s.kind,
                    origin=s.origin[:255],
                    verified=s.verified,
                    verify_detail=s.verify_detail,
                    source_repo=(s.source_repo or None) and s.source_repo[:512],
                    revision=s.revision,
                    pipeline=(s.pipeline or None) and s.pipeline[:255],
                    run_id=(s.run_id or None) and s.run_id[:128],
                    run_url=s.run_url,
                    builder_id=s.builder_id,
                    facts=orjson.dumps(s.facts).decode(),
                    created_at=now,
                )
            )
    return len(sources)


def forget(meta: MetadataStore, digest: str, kind: str, origin: str) -> None:
    """Drop one source's row (a referrer that no longer carries an attestation)."""
    with meta.transaction() as conn:
        conn.execute(
            delete(provenance).where(
                provenance.c.digest == digest, provenance.c.kind == kind, provenance.c.origin == origin
            )
        )


def rank(row: dict[str, Any]) -> int:
    """0 verified, 1 signed but not verified, 2 CI, 3 unsigned statements, 4 annotations, 5 labels."""
    if row["verified"] is True:
        return 0
    if row["verified"] is False:
        return 1
    return {CI: 2, ANNOTATION: 4, LABEL: 5}.get(row["kind"], 3)


def _ts(value: dt.datetime | None) -> float:
    if value is None:
        return 0.0
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _row(r: Any, via: str | None = None) -> dict[str, Any]:
    created = r["created_at"]
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return {
        "digest": r["digest"],
        "repository": r["repo_name"],
        "kind": r["kind"],
        "origin": r["origin"],
        "verified": None if r["verified"] is None else bool(r["verified"]),
        "verify_detail": r["verify_detail"],
        "source_repo": r["source_repo"],
        "revision": r["revision"],
        "pipeline": r["pipeline"],
        "run_id": r["run_id"],
        "run_url": r["run_url"],
        "builder_id": r["builder_id"],
        "facts": orjson.loads(r["facts"]) if r["facts"] else {},
        "created_at": created,
        "via": via,
    }


def order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: by rank, the digest's own rows before related ones, newest first, then by origin."""
    return sorted(rows, key=lambda r: (rank(r), r["via"] is not None, -_ts(r["created_at"]), r["origin"]))


def related_digests(meta: MetadataStore, digest: str) -> dict[str, str]:
    """Manifests an index lists and indexes that list a manifest: related digest -> how (``index``/``child``)."""
    with meta.engine.connect() as conn:
        children = conn.execute(
            select(manifest_refs.c.ref_digest)
            .where(manifest_refs.c.digest == digest, manifest_refs.c.kind == "manifest")
            .distinct()
            .limit(MAX_RELATED)
        ).scalars()
        out = {d: "child" for d in children}
        parents = conn.execute(
            select(manifest_refs.c.digest)
            .where(manifest_refs.c.ref_digest == digest, manifest_refs.c.kind == "manifest")
            .distinct()
            .limit(MAX_RELATED)
        ).scalars()
        out.update({d: "index" for d in parents if d not in out})
    out.pop(digest, None)
    return out


def provenance_for(meta: MetadataStore, digest: str, related: bool = True) -> list[dict[str, Any]]:
    """Every source's row for ``digest``, best first (see ``rank``); with ``related`` also the rows
    of its index or children, each marked ``via`` (``index``: the index listing it; ``child``: a
    manifest it lists), since a tool may attach provenance to either."""
    others = related_digests(meta, digest) if related else {}
    wanted = [digest, *others]
    with meta.engine.connect() as conn:
        rows = conn.execute(select(provenance).where(provenance.c.digest.in_(wanted))).mappings().all()
    return order([_row(r, None if r["digest"] == digest else others.get(r["digest"])) for r in rows])


def merge(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One answer from ranked rows: each field from the best row that has it, plus where it came from
    and which fields the sources disagree on."""
    if not rows:
        return None
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    sources: dict[str, str] = {}
    seen: dict[str, set[str]] = {f: set() for f in FIELDS}
    for r in rows:
        for f in FIELDS:
            value = r.get(f)
            if value is None:
                continue
            seen[f].add(value)
            if out[f] is None:
                out[f] = value
                sources[f] = r["kind"]
    best = rows[0]
    out["verified"] = best["verified"]
    out["kind"] = best["kind"]
    out["sources"] = len(rows)
    out["from"] = sources
    out["conflicts"] = sorted(f for f in ("source_repo", "revision") if len(seen[f]) > 1)
    return out


def summary_for(meta: MetadataStore, digest: str) -> dict[str, Any] | None:
    """The merged answer for one digest (the image document's ``provenance``), None when nothing is known."""
    return merge(provenance_for(meta, digest))


def summaries(meta: MetadataStore, digests: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Merged answers for many digests at once (own rows only: one query per 500 digests)."""
    wanted = list(dict.fromkeys(digests))
    grouped: dict[str, list[dict[str, Any]]] = {}
    with meta.engine.connect() as conn:
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            for r in conn.execute(select(provenance).where(provenance.c.digest.in_(chunk))).mappings():
                grouped.setdefault(r["digest"], []).append(_row(r))
    out = {}
    for d, rows in grouped.items():
        merged = merge(order(rows))
        if merged is not None:
            out[d] = merged
    return out


def digests_built_from(meta: MetadataStore, source_repo: str, revision: str | None = None) -> list[dict[str, Any]]:
    """Digests some source says were built from ``source_repo`` (any spelling; normalised here),
    optionally at ``revision`` (a prefix of 7+ characters matches): one entry per digest with the
    best claim, best first, then by digest."""
    repo = normalise_repo(source_repo) or source_repo
    q = select(provenance).where(provenance.c.source_repo == repo)
    if revision:
        q = q.where(
            provenance.c.revision == revision
            if len(revision) < 7
            else or_(provenance.c.revision == revision, provenance.c.revision.startswith(revision))
        )
    with meta.engine.connect() as conn:
        rows = [_row(r) for r in conn.execute(q).mappings()]
    best: dict[str, dict[str, Any]] = {}
    for r in order(rows):
        best.setdefault(r["digest"], r)
    out = [
        {
            "digest": d,
            "repository": r["repository"],
            "source_repo": r["source_repo"],
            "revision": r["revision"],
            "pipeline": r["pipeline"],
            "run_id": r["run_id"],
            "run_url": r["run_url"],
            "kind": r["kind"],
            "verified": r["verified"],
        }
        for d, r in best.items()
    ]
    return sorted(out, key=lambda e: (rank(e), e["digest"]))


def manifest_digests(meta: MetadataStore, after: tuple[str, str] | None, n: int) -> list[tuple[str, str]]:
    """(repository, digest) of stored manifests in a stable order, a page after ``after`` (backfill)."""
    q = (
        select(repositories.c.name, manifests.c.digest)
        .select_from(manifests.join(repositories))
        .order_by(repositories.c.name, manifests.c.digest)
        .limit(n)
    )
    if after is not None:
        name, digest = after
        q = q.where(or_(repositories.c.name > name, and_(repositories.c.name == name, manifests.c.digest > digest)))
    with meta.engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(q)]

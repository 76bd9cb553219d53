"""One ``image_findings`` row per finding of an image's current vulnerability report.

Reports are zstd JSON documents, fine for one image but not for "which exposed workloads run
a critical, KEV-listed, fixable finding" over a million findings: these rows (and the
``advisory_aliases`` every advisory is also known by) let the explore queries use indexes.
They are rewritten wherever a report is stored (:func:`hallmark.pipeline.matching`), kept in
step by re-matching when only ratings moved (severity, KEV, a fix became available), removed
with the image, and back-filled for reports stored before the rows existed (:func:`backfill`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hallmark.metadata.store import MetadataStore
from hallmark.pipeline.tables import advisory_aliases, image_findings, images, reports

SEVERITY_RANK: dict[str, int] = {"critical": 4, "high": 3, "medium": 2, "low": 1, "unknown": 0}
_INSERT_CHUNK = 500


def severity_of(value: Any) -> tuple[str, int]:
    """(stored severity, rank): anything but the four ratings reads ``unknown`` (rank 0)."""
    sev = str(value or "unknown").lower()
    return (sev, SEVERITY_RANK[sev]) if sev in SEVERITY_RANK else ("unknown", 0)


def row_of(repo: str, digest: str, f: Mapping[str, Any]) -> dict[str, Any]:
    """The row of one report finding (the field names of ``hallmark.advisories.matcher.Finding``)."""
    sev, rank = severity_of(f.get("severity"))
    return {
        "repo_name": repo,
        "digest": digest,
        "advisory_id": str(f.get("advisory_id") or "")[:128],
        "package": str(f.get("package") or "")[:255],
        "version": str(f.get("installed_version") or "")[:255],
        "ecosystem": (str(f["ecosystem"])[:64] if f.get("ecosystem") else None),
        "purl": f.get("purl") or None,
        "severity": sev,
        "severity_rank": rank,
        "kev": bool(f.get("kev")),
        "fix_available": bool(f.get("fixed_versions")),
        # apply_vex marks a finding it suppresses (not_affected / fixed, in effect, unexpired)
        "suppressed": bool(f.get("suppressed")),
    }


def rows_fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """What the stored rows of one image say; equal fingerprints need no rewrite."""
    keys = sorted(
        f"{r['advisory_id']}|{r['package']}|{r['version']}|{r['severity_rank']}|{int(bool(r['kev']))}"
        f"|{int(bool(r['fix_available']))}|{int(bool(r['suppressed']))}"
        for r in rows
    )
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def report_rows(repo: str, digest: str, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [row_of(repo, digest, f) for f in report.get("findings") or [] if f.get("advisory_id")]


def _insert_ignore(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    ins = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    for i in range(0, len(rows), _INSERT_CHUNK):
        conn.execute(ins.on_conflict_do_nothing(index_elements=keys), rows[i : i + _INSERT_CHUNK])


def write_rows(conn: Connection, repo: str, digest: str, report: Mapping[str, Any]) -> int:
    """Inside the caller's transaction: delete the image's rows, insert one per finding, upsert aliases."""
    conn.execute(delete(image_findings).where(image_findings.c.digest == digest, image_findings.c.repo_name == repo))
    rows = report_rows(repo, digest, report)
    for i in range(0, len(rows), _INSERT_CHUNK):
        conn.execute(image_findings.insert(), rows[i : i + _INSERT_CHUNK])
    aliases = {
        (str(a)[:128], str(f["advisory_id"])[:128])
        for f in report.get("findings") or []
        if f.get("advisory_id")
        for a in f.get("aliases") or []
        if a and a != f["advisory_id"]
    }
    if aliases:
        _insert_ignore(
            conn,
            advisory_aliases,
            [{"alias": a, "advisory_id": i} for a, i in sorted(aliases)],
            ["alias", "advisory_id"],
        )
    return len(rows)


def replace_findings(meta: MetadataStore, repo: str, digest: str, report: Mapping[str, Any]) -> int:
    """Make the image's rows say what ``report`` says, in one transaction; returns the row count."""
    with meta.transaction() as conn:
        return write_rows(conn, repo, digest, report)


def forget_findings(conn: Connection, repo: str, digest: str) -> None:
    """Inside the caller's transaction (the image is being forgotten): drop its rows."""
    conn.execute(delete(image_findings).where(image_findings.c.digest == digest, image_findings.c.repo_name == repo))


def stored_fingerprints(meta: MetadataStore, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The rows fingerprint of each (repo, digest) as stored now (images without rows included)."""
    by_image: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in keys}
    digests = sorted({d for _, d in keys})
    cols = [
        image_findings.c.repo_name,
        image_findings.c.digest,
        image_findings.c.advisory_id,
        image_findings.c.package,
        image_findings.c.version,
        image_findings.c.severity_rank,
        image_findings.c.kev,
        image_findings.c.fix_available,
        image_findings.c.suppressed,
    ]
    with meta.engine.connect() as conn:
        for i in range(0, len(digests), 500):
            for r in conn.execute(select(*cols).where(image_findings.c.digest.in_(digests[i : i + 500]))).mappings():
                rows = by_image.get((r["repo_name"], r["digest"]))
                if rows is not None:
                    rows.append(dict(r))
    return {k: rows_fingerprint(v) for k, v in by_image.items()}


def missing_rows(meta: MetadataStore, limit: int = 500) -> list[tuple[str, str]]:
    """Images with a stored vulnerability report holding findings but no rows (stored before the
    rows existed); an image whose report has no finding has nothing to back-fill."""
    has_rows = exists().where(
        image_findings.c.repo_name == images.c.repo_name, image_findings.c.digest == images.c.digest
    )
    has_report = exists().where(
        reports.c.repo_name == images.c.repo_name,
        reports.c.digest == images.c.digest,
        reports.c.kind == "vulnerabilities",
    )
    q = select(images.c.repo_name, images.c.digest, images.c.summary).where(has_report, ~has_rows)
    out: list[tuple[str, str]] = []
    with meta.engine.connect() as conn:
        for repo, digest, summary in conn.execute(q):
            s = orjson.loads(summary) if summary else {}
            if not isinstance(s, dict) or int(s.get("total") or 0) + int(s.get("suppressed") or 0) > 0:
                out.append((repo, digest))  # no usable summary: read the report to be sure
            if len(out) >= limit:
                break
    return out


def backfill(meta: MetadataStore, load_report: Any, batch: int = 500) -> dict[str, int]:
    """Write rows for every image :func:`missing_rows` names, from its stored report.

    ``load_report(repo, digest)`` returns the stored report document (or None). Images whose
    report turns out empty are remembered for this run so the loop ends.
    """
    stats = {"images": 0, "rows": 0}
    seen: set[tuple[str, str]] = set()
    while True:
        todo = [k for k in missing_rows(meta, batch + len(seen)) if k not in seen]
        if not todo:
            return stats
        for repo, digest in todo:
            seen.add((repo, digest))
            doc = load_report(repo, digest)
            if doc is None:
                continue
            stats["rows"] += replace_findings(meta, repo, digest, doc)
            stats["images"] += 1


def backfill_job(ctx: Any) -> dict[str, int]:
    """Periodic job ``findings.backfill``: rows for reports stored before the rows existed (an
    upgraded database), hourly, so explore answers without waiting for a re-match."""
    store = ctx.pipeline.store if ctx.pipeline is not None else None
    if store is None:
        return {"images": 0, "rows": 0}

    def load(repo: str, digest: str) -> dict[str, Any] | None:
        found = store.get_report(repo, digest, "vulnerabilities")
        return found["doc"] if found else None

    return backfill(ctx.meta, load)

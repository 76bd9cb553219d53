"""One advisory across the catalog: what it is, every image it affects, the workloads running one,
its fixed versions, KEV/EPSS and the VEX decisions about it (``GET /api/v1/advisories/{id}``).

Affected images come from ``image_findings`` (any id the advisory is known by, through
``advisory_aliases``), so the answer is indexed, not a read of every report. The caller filters
images by what the reader may pull (:func:`restrict`) before workloads are attached.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import and_, select

from hallmark.catalog.store import DEFAULT_STAGE
from hallmark.catalog.tables import catalog_entries
from hallmark.discovery.search import advisory_ids
from hallmark.inventory.tables import workload_images, workloads
from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import repositories, tags
from hallmark.pipeline.tables import image_findings, images, vex_documents

Key = tuple[str, str]
_CHUNK = 900


class UnknownAdvisory(LookupError):
    """Neither the loaded advisory set nor any image knows this id."""


def affected_images(meta: MetadataStore, advisory: str) -> tuple[set[str], list[dict[str, Any]]]:
    """(every id of the advisory, one entry per image with a finding of it: repository, digest,
    stage, grade, its findings and whether VEX suppresses all of them)."""
    f = image_findings.c
    stage = catalog_entries.c.stage
    with meta.engine.connect() as conn:
        ids = advisory_ids(conn, advisory)
        q = (
            select(
                f.repo_name,
                f.digest,
                f.advisory_id,
                f.package,
                f.version,
                f.ecosystem,
                f.severity,
                f.kev,
                f.fix_available,
                f.suppressed,
                stage,
                images.c.grade,
            )
            .select_from(
                image_findings.outerjoin(
                    catalog_entries,
                    and_(catalog_entries.c.repo_name == f.repo_name, catalog_entries.c.digest == f.digest),
                ).outerjoin(images, and_(images.c.repo_name == f.repo_name, images.c.digest == f.digest))
            )
            .where(f.advisory_id.in_(sorted(ids)))
            .order_by(f.repo_name, f.digest)
        )
        by_image: dict[Key, dict[str, Any]] = {}
        for r in conn.execute(q):
            entry = by_image.setdefault(
                (r[0], r[1]),
                {
                    "repository": r[0],
                    "digest": r[1],
                    "stage": r[10] or DEFAULT_STAGE,
                    "grade": r[11] or "unknown",
                    "findings": [],
                },
            )
            entry["findings"].append(
                {
                    "advisory_id": r[2],
                    "package": r[3],
                    "version": r[4],
                    "ecosystem": r[5],
                    "severity": r[6],
                    "kev": bool(r[7]),
                    "fix_available": bool(r[8]),
                    "suppressed": bool(r[9]),
                }
            )
    out = list(by_image.values())
    for e in out:
        e["suppressed"] = all(x["suppressed"] for x in e["findings"])  # VEX says not affected / fixed
    return ids, out


def with_tags_and_workloads(meta: MetadataStore, shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each image's tags (in place) and return the workloads running any of them."""
    keys = {(e["repository"], e["digest"]) for e in shown}
    digests = sorted({d for _, d in keys})
    repos = {r for r, _ in keys}
    tag_map: dict[Key, list[str]] = {}
    running: list[dict[str, Any]] = []
    w, wi = workloads.c, workload_images.c
    with meta.engine.connect() as conn:
        for i in range(0, len(digests), _CHUNK):
            part = digests[i : i + _CHUNK]
            tq = (
                select(repositories.c.name, tags.c.digest, tags.c.name)
                .select_from(tags.join(repositories, repositories.c.id == tags.c.repo_id))
                .where(tags.c.digest.in_(part))
            )
            for repo, digest, tag in conn.execute(tq):
                if (repo, digest) in keys:
                    tag_map.setdefault((repo, digest), []).append(tag)
            wq = (
                select(w.cluster, w.namespace, w.kind, w.name, w.exposed, wi.container, wi.repo_name, wi.digest)
                .select_from(workload_images.join(workloads, workloads.c.id == wi.workload_id))
                .where(wi.digest.in_(part))
            )
            for r in conn.execute(wq):
                # a runtime naming no repository, or one the reader sees images of, runs this content
                if r[6] is None or r[6] in repos:
                    running.append(
                        {
                            "cluster": r[0],
                            "namespace": r[1],
                            "kind": r[2],
                            "name": r[3],
                            "exposed": bool(r[4]),
                            "container": r[5],
                            "repository": r[6],
                            "digest": r[7],
                        }
                    )
    for e in shown:
        e["tags"] = sorted(tag_map.get((e["repository"], e["digest"]), []))
    running.sort(key=lambda x: (x["cluster"], x["namespace"], x["kind"], x["name"], x["container"]))
    return running


def vex_decisions(
    meta: MetadataStore, ids: Collection[str], visible: Callable[[str | None], bool]
) -> list[dict[str, Any]]:
    """Statements of uploaded OpenVEX documents about any of ``ids`` (global documents, and the
    ones for images the reader may see)."""
    from hallmark.report.vex import VexError, parse_vex

    wanted = set(ids)
    out: list[dict[str, Any]] = []
    with meta.engine.connect() as conn:
        rows = conn.execute(select(vex_documents).order_by(vex_documents.c.id)).mappings().all()
    for row in rows:
        if row["repo_name"] is not None and not visible(row["repo_name"]):
            continue
        try:
            doc = parse_vex(row["doc"], source=f"vex:{row['id']}")
        except VexError:
            continue
        for st in doc.statements:
            if not wanted & {st.vulnerability, *st.aliases}:
                continue
            out.append(
                {
                    "document": row["id"],
                    "repository": row["repo_name"],
                    "digest": row["digest"],
                    "uploaded_by": row["uploaded_by"],
                    "vulnerability": st.vulnerability,
                    "status": st.status,
                    "justification": st.justification,
                    "impact_statement": st.impact_statement,
                    "action_statement": st.action_statement,
                    "products": [p.ids[0] if p.ids else None for p in st.products],
                    "valid_until": st.valid_until.isoformat() if st.valid_until else None,
                }
            )
    return out


def advisory_info(index: Any, ids: Collection[str], findings: list[dict[str, Any]]) -> dict[str, Any]:
    """From the loaded advisory set (``AdvisoryIndex`` or None): the record, KEV, EPSS and the
    fixed versions of each affected package; KEV falls back to what the findings say."""
    out: dict[str, Any] = {"advisory": None, "kev": any(f["kev"] for f in findings), "epss": None, "fixed_versions": []}
    if index is None:
        return out
    adv = next((index.advisories[i] for i in sorted(ids) if i in index.advisories), None)
    if adv is not None:
        aliases, kev, epss, _ = index.advisory_info(adv)
        out["advisory"] = {
            "id": adv.id,
            "aliases": list(aliases),
            "summary": adv.summary,
            "severity": adv.severity,
            "cvss_score": adv.cvss_score,
            "cvss_vector": adv.cvss_vector,
            "published": adv.published,
            "modified": adv.modified,
            "references": list(adv.references),
            "source": adv.source,
        }
        out["kev"] = out["kev"] or bool(kev)
        out["epss"] = epss
    fixed: dict[tuple[str, str], list[str]] = {}
    for f in findings:
        eco, name = f.get("ecosystem") or "", f["package"]
        if (eco, name) in fixed:
            continue
        versions: list[str] = []
        for entry in index.lookup(eco, name):
            if entry.advisory.id in ids:
                versions.extend(entry.fixed_versions())
        fixed[(eco, name)] = list(dict.fromkeys(versions))
    out["fixed_versions"] = [{"ecosystem": e, "package": n, "fixed": v} for (e, n), v in sorted(fixed.items())]
    return out


def detail(meta: MetadataStore, advisory: str, index: Any, visible: Callable[[str | None], bool]) -> dict[str, Any]:
    """The whole document; raises :class:`UnknownAdvisory` when nothing knows ``advisory``."""
    ids, found = affected_images(meta, advisory)
    in_set = index is not None and any(i in index.advisories for i in ids)
    if not found and not in_set:
        raise UnknownAdvisory(f"advisory {advisory} is not in the loaded advisory set and no image has it")
    shown = [e for e in found if visible(e["repository"])]
    running = with_tags_and_workloads(meta, shown)
    info = advisory_info(index, ids, [f for e in found for f in e["findings"]])
    return {
        "id": advisory,
        "ids": sorted(ids),
        **info,
        "affected": sum(1 for e in shown if not e["suppressed"]),
        "images": shown,
        "workloads": running,
        "vex": vex_decisions(meta, ids, visible),
    }

"""Stage "match": stored inventory + active advisory set -> vulnerability report, and re-matching on updates.

Re-matching never touches layers: it reads the inventory stored by the index
stage (``index_cache`` kind "image"), so a new advisory set costs one pass over
packages per image. The difference to the previous report (new and resolved
findings) becomes an event and a webhook notification.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.advisories.index import AdvisoryIndex
from hallmark.advisories.matcher import match_inventory
from hallmark.index import IndexResult
from hallmark.pipeline.advisory_sets import load_active

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

REPORT_SCHEMA = "https://hallmark.dev/schemas/vulnerability-report/v1"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")

_cache_lock = threading.Lock()
_cache: dict[str, tuple[int, AdvisoryIndex]] = {}


def active_index(pipeline: Pipeline) -> tuple[dict[str, Any], AdvisoryIndex] | None:
    """The active advisory set, loaded once per process and replaced when a newer set is activated."""
    meta = pipeline.store.active_advisory_set()
    if meta is None:
        return None
    key = str(pipeline.config.data_path)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != meta["id"]:
            idx = load_active(pipeline.config, meta)
            _cache[key] = (meta["id"], idx)
            hit = _cache[key]
    return meta, hit[1]


def finding_key(f: dict[str, Any]) -> str:
    return f"{f['advisory_id']}|{f['package']}|{f['installed_version']}"


def build_report(pipeline: Pipeline, repo: str, digest: str) -> dict[str, Any] | None:
    inv = pipeline.inventory(digest)
    if inv is None:
        return None
    return make_report(inv, active_index(pipeline), repo, digest)


def make_report(
    inv: IndexResult, active: tuple[dict[str, Any], AdvisoryIndex] | None, repo: str, digest: str
) -> dict[str, Any]:
    """The Hallmark JSON vulnerability report (schema in docs/report-schema.md) for one inventory."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": now,
        "image": {
            "repository": repo,
            "digest": digest,
            "distro": dataclasses.asdict(inv.distro) if inv.distro else None,
            "package_count": len(inv.packages),
            "indexer_version": inv.indexer_version,
        },
    }
    if active is None:
        report.update(
            advisory_set=None,
            findings=[],
            coverage={},
            unsupported_releases=[],
            support_notices=[],
            complete=False,
            notes=["no advisory data loaded: run `hallmark db update`; this image is NOT known to be clean"],
        )
    else:
        meta, idx = active
        res = match_inventory(idx, inv.packages, inv.distro)
        notes = [
            f"no advisory data for {r}: findings for its OS packages are unknown, not absent"
            for r in res.unsupported_releases
        ]
        report.update(
            advisory_set={"id": meta.get("id"), "created_at": str(meta.get("created_at"))},
            findings=[f.as_dict() for f in res.findings],
            coverage=res.coverage,
            unsupported_releases=res.unsupported_releases,
            support_notices=[dataclasses.asdict(n) for n in res.support_notices],
            complete=res.complete,
            notes=notes,
        )
    report["summary"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    counts = Counter((f.get("severity") or "unknown") for f in report["findings"])
    return {
        "total": len(report["findings"]),
        "by_severity": {s: counts.get(s, 0) for s in SEVERITIES},
        "fixable": sum(1 for f in report["findings"] if f.get("fixed_versions")),
        "kev": sum(1 for f in report["findings"] if f.get("kev")),
        "complete": report["complete"],
        "unsupported_releases": report["unsupported_releases"],
        "advisory_set": (report.get("advisory_set") or {}).get("id"),
    }


def match_image(pipeline: Pipeline, repo: str, digest: str, notify: bool = False) -> dict[str, Any] | None:
    """Match one image and store/attach the report; returns the diff against the previous report."""
    found = pipeline._image_manifest(repo, digest)
    if found is None:
        return None
    report = build_report(pipeline, repo, digest)
    if report is None:
        return None
    report = apply_stored_vex(pipeline, report, repo, digest)
    content = pipeline.store.get_report(repo, digest, "content")
    if content is not None:
        report["summary"]["content"] = content["doc"]["summary"]
    previous = pipeline.store.get_report(repo, digest, "vulnerabilities")
    old = {finding_key(f) for f in previous["doc"]["findings"]} if previous else set()
    new = {finding_key(f) for f in report["findings"]}
    diff = {"new": sorted(new - old), "resolved": sorted(old - new)}

    def suppressed(findings: list[dict[str, Any]]) -> set[str]:
        return {finding_key(f) for f in findings if f.get("suppressed")}

    same_triage = previous is not None and suppressed(previous["doc"]["findings"]) == suppressed(report["findings"])
    if previous is not None and not diff["new"] and not diff["resolved"] and same_triage and notify:
        # Nothing changed for this image: keep the attached report, refresh the status only.
        pipeline.store.set_image(
            repo, digest, status="done", summary=report["summary"], advisory_set=report["summary"]["advisory_set"]
        )
        return diff
    body = orjson.dumps(report)
    from hallmark.pipeline.service import VULN_REPORT

    pipeline._attach_report(repo, found[0], "vulnerabilities", VULN_REPORT, body, report)
    pipeline.store.set_image(
        repo, digest, status="done", summary=report["summary"], advisory_set=report["summary"]["advisory_set"]
    )
    if notify and (diff["new"] or diff["resolved"]):
        payload = {"repository": repo, "digest": digest, **diff, "summary": report["summary"]}
        pipeline.store.add_event("image.findings_changed", repo, digest, payload)
        from hallmark.pipeline.webhooks import deliver

        deliver(pipeline.config, "image.findings_changed", payload)
    return diff


def apply_stored_vex(pipeline: Pipeline, report: dict[str, Any], repo: str, digest: str) -> dict[str, Any]:
    """Mark findings that uploaded OpenVEX documents (global or for this image) suppress."""
    from hallmark.report.vex import VexError, apply_vex, parse_vex

    docs = []
    for row in pipeline.store.vex_for(repo, digest):
        try:
            docs.append(parse_vex(row["doc"], source=f"vex:{row['id']} uploaded by {row['uploaded_by']}"))
        except VexError:
            continue  # validated on upload; a document that no longer parses is ignored, not fatal
    if not docs:
        return report
    return apply_vex(report, docs)  # summary recomputed: suppressed findings are not counted


def rematch_all(pipeline: Pipeline) -> dict[str, int]:
    """Re-match every indexed image against the active set (no layer is read)."""
    stats = {"images": 0, "changed": 0}
    for repo, digest in list(pipeline.store.indexed_images()):
        diff = match_image(pipeline, repo, digest, notify=True)
        stats["images"] += 1
        if diff and (diff["new"] or diff["resolved"]):
            stats["changed"] += 1
    return stats

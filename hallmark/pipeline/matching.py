"""Stage "match": stored inventory + active advisory set -> vulnerability report, and re-matching on updates.

Re-matching never touches layers: it reads the inventory stored by the index
stage (``index_cache`` kind "image"), so a new advisory set costs one pass over
packages per image. The difference to the previous report (new and resolved
findings) becomes an event and a webhook notification.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.advisories.index import AdvisoryIndex
from hallmark.index import INDEXER_VERSION, IndexResult
from hallmark.lifecycle.health import assess, columns, utc_today
from hallmark.lifecycle.health_store import store_many
from hallmark.pipeline.advisory_sets import load_active
from hallmark.pipeline.finding_rows import replace_findings, report_rows, rows_fingerprint, stored_fingerprints
from hallmark.pipeline.findings import combine, content_by_kind, content_part
from hallmark.pipeline.vuln_report import finding_key, fingerprint, make_report

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

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
            idx = load_active(pipeline.config, meta, pipeline.blobs)
            _cache[key] = (meta["id"], idx)
            hit = _cache[key]
    return meta, hit[1]


def build_report(pipeline: Pipeline, repo: str, digest: str) -> dict[str, Any] | None:
    inv = pipeline.inventory(digest)
    if inv is None:
        return None
    return make_report(inv, active_index(pipeline), repo, digest)


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
    part = None
    if content is not None:
        report["summary"]["content"] = content["doc"]["summary"]
        part = content_by_kind(content["doc"].get("findings") or [])
    report["summary"]["combined"] = combine(report["summary"]["by_severity"], part)
    previous = pipeline.store.get_report(repo, digest, "vulnerabilities")
    return _store_report(pipeline, repo, found[0], report, previous["doc"]["findings"] if previous else None, notify)


def _store_report(
    pipeline: Pipeline,
    repo: str,
    subject: Any,
    report: dict[str, Any],
    previous_findings: list[dict[str, Any]] | None,
    notify: bool,
) -> dict[str, Any]:
    digest = subject.digest
    old = {finding_key(f) for f in previous_findings or []}
    new = {finding_key(f) for f in report["findings"]}
    diff = {"new": sorted(new - old), "resolved": sorted(old - new)}
    report["summary"]["fingerprint"] = fingerprint(report)
    from hallmark.pipeline.service import VULN_REPORT

    pipeline._attach_report(repo, subject, "vulnerabilities", VULN_REPORT, orjson.dumps(report), report)
    pipeline.store.set_image(
        repo,
        digest,
        status="done",
        summary=report["summary"],
        advisory_set=report["summary"]["advisory_set"],
        **columns(assess(report, utc_today())),  # the health grade moves with the findings
    )
    replace_findings(pipeline.meta, repo, digest, report)  # the rows explore queries read
    if notify and (diff["new"] or diff["resolved"]):
        payload = {"repository": repo, "digest": digest, **diff, "summary": report["summary"]}
        pipeline.store.add_event("image.findings_changed", repo, digest, payload)
        from hallmark.pipeline.webhooks import deliver

        deliver(pipeline.config, "image.findings_changed", payload)
    return diff


def _vex_docs(rows: list[dict[str, Any]]) -> list[Any]:
    from hallmark.report.vex import VexError, parse_vex

    docs = []
    for row in rows:
        try:
            docs.append(parse_vex(row["doc"], source=f"vex:{row['id']} uploaded by {row['uploaded_by']}"))
        except VexError:
            continue  # validated on upload; a document that no longer parses is ignored, not fatal
    return docs


def apply_stored_vex(pipeline: Pipeline, report: dict[str, Any], repo: str, digest: str) -> dict[str, Any]:
    """Mark findings that uploaded OpenVEX documents (global or for this image) suppress."""
    from hallmark.report.vex import apply_vex

    docs = _vex_docs(pipeline.store.vex_for(repo, digest))
    if not docs:
        return report
    return apply_vex(report, docs)  # summary recomputed: suppressed findings are not counted


_WORK: tuple[Any, list[tuple[str, str, dict[str, Any], list[Any], dict[str, Any]]]] | None = None


def _triage(active: Any, item: tuple[str, str, dict[str, Any], list[Any], dict[str, Any]]) -> dict[str, Any]:
    from hallmark.report.vex import apply_vex

    repo, digest, inv, docs, old_summary = item
    report = make_report(IndexResult.from_json(inv), active, repo, digest)
    if docs:
        report = apply_vex(report, docs)
    if "content" in old_summary:
        report["summary"]["content"] = old_summary["content"]
    report["summary"]["combined"] = combine(report["summary"]["by_severity"], content_part(old_summary.get("combined")))
    report["summary"]["fingerprint"] = fingerprint(report)
    return report


# fingerprint, summary, health, fingerprint of the image_findings rows (ratings included)
_Outcome = tuple[str, dict[str, Any], dict[str, Any], str]


def _outcome(report: dict[str, Any]) -> _Outcome:
    image = report.get("image") or {}
    rows = rows_fingerprint(report_rows(str(image.get("repository")), str(image.get("digest")), report))
    return report["summary"]["fingerprint"], report["summary"], assess(report, utc_today()), rows


def _summary_of(i: int) -> _Outcome:
    """Pool worker: fingerprint, summary and health of item ``i`` (the inputs come with the fork)."""
    assert _WORK is not None
    return _outcome(_triage(_WORK[0], _WORK[1][i]))


def _summaries(active: Any, items: list[Any]) -> list[_Outcome]:
    """Match on every core: forked workers inherit the loaded advisory index and the inputs."""
    global _WORK
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(items) < 64 or "fork" not in multiprocessing.get_all_start_methods():
        return [_summary_of_local(active, it) for it in items]
    _WORK = (active, items)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_summary_of, range(len(items)), chunksize=max(1, len(items) // (workers * 8)))
    finally:
        _WORK = None


def _summary_of_local(active: Any, item: Any) -> _Outcome:
    return _outcome(_triage(active, item))


def _with_content_counts(pipeline: Pipeline, row: dict[str, Any]) -> dict[str, Any]:
    """The stored summary, with the per-kind content counts filled in from the content report when
    it predates them (re-matching copies them; without this such an image would lose its content)."""
    summary = dict(row["summary"] or {})
    if "content" in summary and "combined" not in summary:
        content = pipeline.store.get_report(row["repository"], row["digest"], "content")
        if content is not None:
            summary["combined"] = combine(None, content_by_kind(content["doc"].get("findings") or []))
    return summary


def rematch_all(pipeline: Pipeline, batch: int = 2000) -> dict[str, int]:
    """Re-match every indexed image against the active set, reading no layer.

    Built for thousands of images: the advisory set, VEX documents and image rows are
    read once and inventories in batches; matching runs on every core (forked workers
    share the loaded advisory index). An image whose findings and triage are unchanged
    (same fingerprint) only gets its summary refreshed, in one transaction per batch, and its
    ``image_findings`` rows rewritten when a rating moved without changing the fingerprint
    (severity, KEV, a fix became available; compared with the stored rows per batch);
    a changed image gets a new report, an event and a webhook call.
    """
    stats = {"images": 0, "changed": 0, "unchanged": 0, "failed": 0}
    active = active_index(pipeline)
    vex_rows = pipeline.store.list_vex()
    global_vex = _vex_docs([r for r in vex_rows if r["repo_name"] is None])
    image_vex: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in vex_rows:
        if r["repo_name"] is not None:
            image_vex.setdefault((r["repo_name"], r["digest"]), []).append(r)
    rows = pipeline.store.rematch_candidates()
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        inventories = pipeline.cache.get_many("image", INDEXER_VERSION, [r["digest"] for r in part])
        items = []
        for row in part:
            stats["images"] += 1
            inv = inventories.get(row["digest"])
            if inv is None:
                stats["failed"] += 1
                continue
            docs = global_vex + _vex_docs(image_vex.get((row["repository"], row["digest"]), []))
            items.append((row["repository"], row["digest"], inv, docs, _with_content_counts(pipeline, row)))
        refresh: list[tuple[str, str, dict[str, Any]]] = []
        grades: list[tuple[str, str, dict[str, Any]]] = []
        outcomes = _summaries(active, items)
        stored_rows = stored_fingerprints(pipeline.meta, [(it[0], it[1]) for it in items])
        for item, (fp, summary, health, rows_fp) in zip(items, outcomes, strict=True):
            repo, digest, old_summary = item[0], item[1], item[4]
            if old_summary.get("fingerprint") == fp:
                refresh.append((repo, digest, summary))
                grades.append((repo, digest, health))  # same findings, but dates or ratings may differ
                stats["unchanged"] += 1
                if stored_rows.get((repo, digest)) != rows_fp:  # KEV, severity or fix moved: rows only
                    replace_findings(pipeline.meta, repo, digest, _triage(active, item))
                continue
            found = pipeline._image_manifest(repo, digest)
            if found is None:
                continue
            report = _triage(active, item)  # the full report, only for the images that changed
            previous = pipeline.store.get_report(repo, digest, "vulnerabilities")
            old_findings = previous["doc"]["findings"] if previous else None
            diff = _store_report(pipeline, repo, found[0], report, old_findings, notify=True)
            if diff["new"] or diff["resolved"]:
                stats["changed"] += 1
        pipeline.store.refresh_summaries(refresh)
        store_many(pipeline.meta, grades)
    return stats

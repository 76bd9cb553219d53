"""Content checks (malware, secrets, image configuration) riding along on the indexer's single layer read."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

import orjson

from hallmark.config import Config
from hallmark.content import (
    ContentScanner,
    Finding,
    LayerHistory,
    RuleBundle,
    ScanOptions,
    Skip,
    correlate_layers,
    load_rules,
)
from hallmark.index.walker import DIR, FILE, OPAQUE, WHITEOUT, LayerEntry

log = logging.getLogger(__name__)
CONTENT_SCHEMA = "https://hallmark.dev/schemas/content-report/v1"
_MAX_SKIPS_LISTED = 200

_lock = threading.Lock()
_rules: dict[str, tuple[tuple[tuple[str, int, int, int], ...], RuleBundle]] = {}


def _stat_signature(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Cheap change detector for the rule folder: ``db update`` swaps it in with renames."""
    if not root.is_dir():
        return ()
    out = []
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out.append((str(p), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def rules_for(config: Config, pipeline: Any = None) -> RuleBundle:
    """The rule bundle in the data folder (from ``hallmark db update``), else the built-in rules.

    Loaded once per process and reused for every image until the folder changes (checked by
    ``stat`` only; loading hashes and compiles megabytes of rules). With ``pipeline``, a bundle
    that another replica installed (the active set names it) is fetched from the blob store first.
    """
    if pipeline is not None:
        from hallmark.pipeline.shared_sets import ensure_rules

        ensure_rules(config, pipeline.blobs, pipeline.store.active_advisory_set())
    root = config.rules_path
    signature = _stat_signature(root)
    with _lock:
        hit = _rules.get(str(root))
    if hit is not None and hit[0] == signature:
        return hit[1]
    bundle = load_rules(root if signature else None, cache_dir=config.data_path / "cache" / "yara")
    with _lock:
        _rules[str(root)] = (signature, bundle)
    return bundle


class ContentRun:
    """Collects findings for one image while the indexer streams its layers."""

    def __init__(self, rules: RuleBundle) -> None:
        self.rules = rules
        self.scanner = ContentScanner(rules, ScanOptions())
        self.history = LayerHistory()
        self.findings: list[Finding] = []
        self.skipped: list[Skip] = []

    def on_entry(self, entry: LayerEntry, stream: IO[bytes] | None) -> None:
        i = entry.layer_index
        if entry.kind == WHITEOUT:
            self.history.delete(i, entry.path)
        elif entry.kind == OPAQUE:
            self.history.opaque(i, entry.path)
        elif entry.kind == FILE and stream is not None:
            self.history.add(i, entry.path)
            out = self.scanner.scan_file(entry.path, i, entry.layer_digest, stream, entry.size, mode=entry.mode)
            self.findings.extend(out.findings)
            self.skipped.extend(out.skipped)
        else:
            self.history.add(i, entry.path)
            if entry.kind == DIR:
                self.findings.extend(
                    self.scanner.scan_metadata(entry.path, i, entry.layer_digest, entry.mode, is_dir=True)
                )

    def report(self, config_bytes: bytes, repo: str, digest: str) -> dict[str, Any]:
        try:
            cfg = orjson.loads(config_bytes)
        except orjson.JSONDecodeError:
            cfg = {}
        if isinstance(cfg, dict):
            out = self.scanner.scan_config(cfg)
            self.findings.extend(out.findings)
            self.skipped.extend(out.skipped)
        findings = correlate_layers(self.findings, self.history)
        docs = [f.to_dict() for f in findings]
        by_kind = Counter(d.get("kind") for d in docs)
        by_sev = Counter(str(d.get("severity")) for d in docs)
        skip_reasons = Counter(s.reason for s in self.skipped)
        return {
            "schema": CONTENT_SCHEMA,
            "image": {"repository": repo, "digest": digest},
            "rules": {"digest": self.rules.digest, "files": len(self.rules.sources), "warnings": self.rules.warnings},
            "findings": docs,
            "skipped": {
                "count": len(self.skipped),
                "by_reason": dict(skip_reasons),
                "examples": [
                    s.to_dict() if hasattr(s, "to_dict") else s.__dict__ for s in self.skipped[:_MAX_SKIPS_LISTED]
                ],
            },
            "summary": {
                "total": len(docs),
                "by_kind": {str(k): v for k, v in by_kind.items()},
                "by_severity": dict(by_sev),
                "still_downloadable_removed": sum(1 for d in docs if d.get("status") == "removed"),
            },
        }


# -- re-checking stored images after a rule update ---------------------------------------------
RECHECK_ALL = "content-recheck"  # job kind: find the images checked with other rules, queue each
RECHECK_IMAGE = "content"  # job kind: re-read one image's layers for the content checks only


def stale_images(pipeline: Any, rules_digest: str) -> list[tuple[str, str]]:
    """Images whose stored content report was made with other rules (or has none)."""
    out = []
    for row in pipeline.store.rematch_candidates():
        stored = pipeline.store.get_report(row["repository"], row["digest"], "content")
        used = ((stored or {}).get("doc") or {}).get("rules") or {}
        if used.get("digest") != rules_digest:
            out.append((row["repository"], row["digest"]))
    return out


def recheck_all(pipeline: Any) -> dict[str, int]:
    """Queue a content re-check of every stored image the current rule bundle has not checked.

    Content checks read file bodies, which are not stored (only package inventories are), so
    unlike advisory re-matching a re-check must read the layers again: one queued job per image,
    spread over the workers and replicas like indexing, never one long job.
    """
    if not pipeline.config.pipeline.content_checks:
        return {"queued": 0}
    digest = rules_for(pipeline.config, pipeline).digest
    queued = 0
    for repo, image_digest in stale_images(pipeline, digest):
        queued += bool(
            pipeline.jobs.enqueue(RECHECK_IMAGE, f"{repo}@{image_digest}", {"repo": repo, "digest": image_digest})
        )
    if queued:
        pipeline.wake()
    return {"queued": queued}


def recheck_image(pipeline: Any, repo: str, digest: str) -> bool:
    """Re-read one image's layers for the content checks, store the new content report and queue
    a match, which recomputes the image's combined counts (what the portal and the gate show)."""
    from hallmark.index import Limits, index_image
    from hallmark.pipeline.service import CONTENT_REPORT, MAX_CONFIG_BYTES

    found = pipeline._image_manifest(repo, digest)
    if found is None:
        return False
    rec, doc = found
    config_digest = doc["config"]["digest"]
    if (pipeline.blobs.stat(config_digest) or 0) > MAX_CONFIG_BYTES:
        return False
    with pipeline.blobs.open(config_digest) as f:
        config = f.read(MAX_CONFIG_BYTES)
    run = ContentRun(rules_for(pipeline.config, pipeline))
    result = index_image(
        rec.content,
        config,
        pipeline.blobs.open,
        manifest_digest=digest,
        cache=None,  # every layer is read: the per-layer cache holds packages, not file contents
        on_entry=run.on_entry,
        limits=Limits.from_settings(pipeline.config.index.model_dump()),
    )
    if result.status != "done":
        log.warning("content re-check of %s@%s failed: %s", repo, digest, result.failure)
        return False
    report = run.report(config, repo, digest)
    try:
        body = orjson.dumps(report)
    except TypeError:  # file names that are not UTF-8: shown as \xNN (hallmark.index.names)
        from hallmark.index.names import json_safe

        report = json_safe(report)
        body = orjson.dumps(report)
    pipeline._attach_report(repo, rec, "content", CONTENT_REPORT, body, report)
    pipeline.store.add_event(
        "image.content_rechecked", repo, digest, {"rules": report["rules"]["digest"], **report["summary"]}
    )
    pipeline.jobs.enqueue("match", f"{repo}@{digest}", {"repo": repo, "digest": digest})
    pipeline.wake()
    return True

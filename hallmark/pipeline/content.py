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


def rules_for(config: Config) -> RuleBundle:
    """The rule bundle in the data folder (from ``hallmark db update``), else the built-in rules.

    Loaded once per process and reused for every image until the folder changes (checked by
    ``stat`` only; loading hashes and compiles megabytes of rules).
    """
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

"""Per-layer cache of content-check results, so a layer is checked once per rule bundle.

Scanning a layer's files with YARA and the secret rules costs seconds; its result depends only
on the layer's bytes (named by its digest), the rule bundle (``RuleBundle.digest``), the scan
options and the code that checks. The key covers all four: the checker part is a digest of the
sources of ``hallmark.content`` and of the layer walker plus the yara-x and google-re2
versions, so a changed checker never reuses an older result. Trivy caches layer analysis the
same way. Findings are stored without their layer index (the same layer sits at another index
in another image) and without their cross-layer status, which is computed per image.

An entry also keeps the layer's path events (added, whited out, made opaque; normalized
paths), so when every
layer of an image is cached the cross-layer view is rebuilt without reading any layer.

Entries are JSON files under ``<cache>/content/``; a missing, corrupt or foreign entry is a
miss, never an error. Per-file "binary" skips are not stored (reports leave them out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from hallmark.content.model import Finding, ScanOutcome, Skip
from hallmark.content.scanner import ScanOptions

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the entry layout changes
EVENTS = ("add", "delete", "opaque")  # LayerHistory methods, by position
_PACKAGE = Path(__file__).resolve().parent
_CHECKER_SOURCES = (
    *sorted(_PACKAGE.glob("*.py")),
    _PACKAGE.parent / "index" / "walker.py",
    _PACKAGE.parent / "index" / "engine.py",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored build
        return "unknown"


@cache
def checker_digest() -> str:
    """Identifies the checking code: its sources and the engines' versions."""
    h = hashlib.sha256(f"format {FORMAT}\0yara-x {_version('yara-x')}\0re2 {_version('google-re2')}\0".encode())
    for path in _CHECKER_SOURCES:
        h.update(path.name.encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def options_key(options: ScanOptions) -> str | None:
    """The options that change results, as text; None when results must not be cached
    (a ClamAV daemon's signatures change outside the rule bundle)."""
    if options.clamd is not None:
        return None
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "clamd"}
    fields["archives"] = dataclasses.asdict(options.archives)
    return json.dumps(fields, sort_keys=True)


@dataclass
class LayerResult:
    """One layer's content-check outcome and its path events ``(EVENTS index, path)``."""

    outcome: ScanOutcome = field(default_factory=ScanOutcome)
    events: list[tuple[int, str]] = field(default_factory=list)

    def replay(self, history: Any, layer_index: int, paths: set[str] | None = None) -> None:
        """Record the events into a :class:`~hallmark.content.layers.LayerHistory`; with
        ``paths`` (normalized), only the events on those paths (all that a set of findings'
        correlation reads: their paths and the folders above them)."""
        for op, path in self.events:
            if paths is None or path in paths:
                getattr(history, EVENTS[op])(layer_index, path)


def relevant_paths(findings: Any) -> set[str]:
    """The paths whose later events decide the fate of ``findings``: each file finding's layer
    path and every folder above it."""
    out: set[str] = set()
    for f in findings:
        path = f.outer_path
        if path is None:
            continue
        out.add(path)
        while path not in ("/", ""):
            path = posixpath.dirname(path)
            out.add(path)
    return out


class LayerResultCache:
    """Content-check results per (layer digest, rules digest, options, checker)."""

    def __init__(self, root: Path, rules_digest: str, options: ScanOptions) -> None:
        self.root = root
        opts = options_key(options)
        self.enabled = opts is not None
        self._salt = f"{checker_digest()}\0{rules_digest}\0{opts}\0"

    def _path(self, layer_digest: str) -> Path:
        key = hashlib.sha256((self._salt + layer_digest).encode()).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, layer_digest: str, layer_index: int) -> LayerResult | None:
        """The cached result re-stamped with ``layer_index``, or None (miss)."""
        if not self.enabled:
            return None
        path = self._path(layer_digest)
        try:
            doc = _loads(path.read_bytes())
            if doc.get("layer") != layer_digest:
                return None
            outcome = ScanOutcome(
                findings=[Finding(**_finding_fields(f), layer_index=layer_index) for f in doc["findings"]],
                skipped=[Skip(**{**s, "layer_index": layer_index}) for s in doc["skipped"]],
            )
            events = [(int(op), str(p)) for op, p in doc["events"] if 0 <= int(op) < len(EVENTS)]
            return LayerResult(outcome, events)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # corrupt: a miss
            log.warning("ignoring content cache entry %s: %s", path, exc)
            return None

    def put(self, layer_digest: str, result: LayerResult) -> None:
        """Store one layer's result (written atomically; a failure to write is only logged)."""
        if not self.enabled:
            return
        doc = {
            "layer": layer_digest,
            "findings": [_stored(f) for f in result.outcome.findings],
            "skipped": [
                {k: v for k, v in s.to_dict().items() if k != "layer_index"}
                for s in result.outcome.skipped
                if s.reason != "binary"
            ],
            "events": result.events,
        }
        path = self._path(layer_digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".content-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_dumps(doc))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("cannot write content cache entry %s: %s", path, exc)


def _dumps(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # a str that is not valid UTF-8 (lone surrogates): json escapes it
        return json.dumps(doc).encode()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # escaped lone surrogates, written by the fallback above
        return json.loads(data)


def _stored(f: Finding) -> dict[str, Any]:
    doc = {name: getattr(f, name) for name in f.__dataclass_fields__}
    for name in ("layer_index", "status", "removed_in_layer"):
        doc.pop(name)
    doc["extra"] = dict(f.extra)
    return doc


def _finding_fields(doc: dict[str, Any]) -> dict[str, Any]:
    allowed = set(Finding.__dataclass_fields__) - {"layer_index", "status", "removed_in_layer"}
    unknown = set(doc) - allowed
    if unknown:
        raise ValueError(f"unknown finding fields {sorted(unknown)}")
    return doc


__all__ = ["EVENTS", "FORMAT", "LayerResult", "LayerResultCache", "checker_digest", "options_key", "relevant_paths"]

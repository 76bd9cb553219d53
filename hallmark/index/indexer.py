"""The indexing entry points: an image (manifest + config + layer opener) in, an :class:`IndexResult` out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

import orjson

from hallmark.digest import digest_bytes
from hallmark.index.cache import IndexCache
from hallmark.index.detect import Detector
from hallmark.index.detectors import all_detectors
from hallmark.index.engine import EntryHook, LayerFacts, charge_facts, merge, scan_layer
from hallmark.index.limits import Budget, IndexFailed, Limits, OutOfTime, active_budget
from hallmark.index.names import display, json_safe, pack_doc, unpack_doc
from hallmark.index.walker import iter_layer
from hallmark.model import Distro, Package
from hallmark.oci.mediatypes import LAYER_TYPES
from hallmark.oci.source import Descriptor, ImageManifest, ImageSource, OciError

INDEXER_VERSION = "2"  # bump whenever detectors or merge rules change: cached results are then ignored

Progress = Callable[[int, int], None]  # (compressed bytes read so far, total compressed bytes)


@dataclass
class IndexResult:
    """The inventory of one image, or why there is none (``status == "failed"``).

    ``"deferred"`` only comes from a run whose :class:`Budget` is not final (the pipeline's
    short first slice): the image was not judged, it must run again with the full budget.
    Strings are JSON-safe: names that were not UTF-8 show their bytes as ``\\xNN``.
    """

    status: str  # "done", "failed" or "deferred"
    image_digest: str | None = None
    distro: Distro | None = None
    packages: list[Package] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    platform: str | None = None
    indexer_version: str = INDEXER_VERSION

    @property
    def failure(self) -> str | None:
        """``index failed: <reason>`` for failed results, as shown to users."""
        return f"index failed: {self.error}" if self.status == "failed" else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IndexResult:
        d = dict(d)
        d["distro"] = Distro(**d["distro"]) if d.get("distro") else None
        d["packages"] = [Package(**p) for p in d.get("packages") or []]
        return cls(**d)


def index_image(
    manifest: bytes,
    config: bytes,
    open_layer: Callable[[str], BinaryIO],
    *,
    manifest_digest: str | None = None,
    cache: IndexCache | None = None,
    limits: Limits | None = None,
    progress: Progress | None = None,
    detectors: Sequence[Detector] | None = None,
    on_entry: EntryHook | None = None,
    budget: Budget | None = None,
    inflate_apart: bool = False,
) -> IndexResult:
    """Index one single-platform image. Never raises for a bad image: returns a failed result.

    ``open_layer(digest)`` returns a readable stream of the layer blob as stored (compressed);
    every layer not in ``cache`` is read exactly once, start to end. ``on_entry(entry, stream)``
    is called for every tar entry of every layer read (content checks ride along on the same
    read); with it set, the caches are written but not read, so the hook sees every layer;
    cached *failures* are read either way, so a hostile layer or image costs once.
    ``budget`` (default: a fresh one for ``limits``) bounds the time and memory of this run.
    ``inflate_apart``: decompress gzip layers stored in files in a forked child (:mod:`hallmark.index.inflate`).
    """
    digest = manifest_digest or digest_bytes(manifest)
    if budget is None:
        budget = Budget(limits or Limits())
    limits = limits or budget.limits
    if cache is not None:
        hit = _cache_get(cache, "image", digest)
        if hit is not None and (on_entry is None or hit.get("status") == "failed"):
            return IndexResult.from_json(hit)
    try:
        parsed = ImageManifest.parse(manifest, digest)
        with active_budget(budget):
            result = _index(
                parsed, config, open_layer, cache, limits, progress, detectors, on_entry, budget, inflate_apart
            )
    except OutOfTime as exc:
        if not exc.final:
            return IndexResult("deferred", digest, error=display(exc.reason))
        result = IndexResult("failed", digest, error=display(exc.reason))
    except IndexFailed as exc:
        result = IndexResult("failed", digest, error=display(exc.reason))
        if not exc.cache:
            return result
    except OciError as exc:
        return IndexResult("failed", digest, error=display(str(exc)))
    except OSError as exc:
        return IndexResult("failed", digest, error=display(f"I/O error: {exc}"))
    except Exception as exc:  # the server must stay up whatever an image contains
        return IndexResult("failed", digest, error=display(f"internal error: {type(exc).__name__}: {exc}"))
    doc = result.to_json()
    if not _encodable(doc):
        doc = json_safe(doc)
        result = IndexResult.from_json(doc)
    if cache is not None:
        cache.put("image", INDEXER_VERSION, digest, doc)
    return result


def _encodable(doc: dict[str, Any]) -> bool:
    try:
        orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError: a str holding non-UTF-8 bytes (lone surrogates)
        return False
    return True


def _cache_get(cache: IndexCache, kind: str, digest: str) -> dict[str, Any] | None:
    hit = cache.get(kind, INDEXER_VERSION, digest)
    return unpack_doc(hit) if hit is not None else None


def _cache_put(cache: IndexCache, kind: str, digest: str, doc: dict[str, Any]) -> None:
    cache.put(kind, INDEXER_VERSION, digest, doc if _encodable(doc) else pack_doc(doc))


def _blob_matches(open_layer: Callable[[str], BinaryIO], digest: str) -> bool:
    """Re-hash a stored blob: a layer failure is cached only if it came from the real bytes."""
    algo, _, want = digest.partition(":")
    try:
        h = hashlib.new(algo)
        with open_layer(digest) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except (OSError, ValueError, OciError):
        return False
    return h.hexdigest() == want


def _index(
    manifest: ImageManifest,
    config: bytes,
    open_layer: Callable[[str], BinaryIO],
    cache: IndexCache | None,
    limits: Limits,
    progress: Progress | None,
    detectors: Sequence[Detector] | None,
    on_entry: EntryHook | None,
    budget: Budget,
    inflate_apart: bool = False,
) -> IndexResult:
    dets = tuple(detectors) if detectors is not None else all_detectors()
    try:
        cfg = json.loads(config)
    except ValueError as exc:
        raise IndexFailed(f"image config is not JSON: {exc}") from exc
    if digest_bytes(config, manifest.config.digest.partition(":")[0]) != manifest.config.digest:
        raise IndexFailed("image config does not match its digest")
    platform = "/".join(str(cfg.get(k)) for k in ("os", "architecture") if cfg.get(k)) or None
    total = sum(max(d.size, 0) for d in manifest.layers)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    facts: list[LayerFacts] = []
    for i, desc in enumerate(manifest.layers):
        if desc.media_type and desc.media_type not in LAYER_TYPES:
            raise IndexFailed(f"layer {i} has unsupported media type {desc.media_type}")
        hit = _cache_get(cache, "layer", desc.digest) if cache is not None else None
        if hit is not None and "error" in hit:
            raise IndexFailed(hit["error"])  # this layer failed before, in this or another image
        budget.start_layer()
        if hit is not None and on_entry is None:
            lf = LayerFacts.from_json(hit)
            charge_facts(budget, lf)
            facts.append(lf)
            advance(max(desc.size, 0))
            continue
        try:
            with open_layer(desc.digest) as raw:
                warnings: list[str] = []
                entries = iter_layer(
                    raw,
                    desc,
                    i,
                    limits,
                    warn=warnings.append,
                    budget=budget,
                    inflate_apart=inflate_apart,
                    on_raw=advance if progress is not None else None,
                )
                lf = scan_layer(entries, desc.digest, dets, limits, on_entry, budget, warnings)
        except IndexFailed as exc:
            if cache is not None and exc.layer and exc.cache and _blob_matches(open_layer, desc.digest):
                _cache_put(cache, "layer", desc.digest, {"digest": desc.digest, "error": exc.reason})
            raise
        facts.append(lf)
        if cache is not None:
            _cache_put(cache, "layer", desc.digest, lf.to_json())
    merged = merge(facts, dets, limits, budget)
    return IndexResult(
        "done",
        manifest.digest,
        merged.distro,
        merged.packages,
        [d.digest for d in manifest.layers],
        merged.warnings,
        platform=platform,
        indexer_version=INDEXER_VERSION,
    )


def index_source(source: ImageSource, **kwargs: Any) -> IndexResult:
    """Index an image from any :class:`ImageSource` (see :func:`hallmark.oci.open_source`)."""
    try:
        manifest = source.get_manifest()
        config = source.get_config(manifest)
    except OciError as exc:
        return IndexResult("failed", error=str(exc))
    by_digest = {d.digest: d for d in manifest.layers}

    def open_layer(digest: str) -> BinaryIO:
        return source.open_blob(by_digest.get(digest) or Descriptor("", digest))

    return index_image(manifest.raw, config, open_layer, manifest_digest=manifest.digest, **kwargs)

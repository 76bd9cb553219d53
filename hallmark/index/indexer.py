"""The indexing entry points: an image (manifest + config + layer opener) in, an :class:`IndexResult` out."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from hallmark.digest import digest_bytes
from hallmark.index.cache import IndexCache
from hallmark.index.detect import Detector
from hallmark.index.detectors import all_detectors
from hallmark.index.engine import EntryHook, LayerFacts, merge, scan_layer
from hallmark.index.limits import IndexFailed, Limits
from hallmark.index.walker import iter_layer
from hallmark.model import Distro, Package
from hallmark.oci.mediatypes import LAYER_TYPES
from hallmark.oci.source import Descriptor, ImageManifest, ImageSource, OciError

INDEXER_VERSION = "1"  # bump whenever detectors or merge rules change: cached results are then ignored

Progress = Callable[[int, int], None]  # (compressed bytes read so far, total compressed bytes)


@dataclass
class IndexResult:
    """The inventory of one image, or why there is none (``status == "failed"``)."""

    status: str  # "done" or "failed"
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


class _ProgressReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO, callback: Callable[[int], None]) -> None:
        self.inner = inner
        self.callback = callback

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        if data:
            self.callback(len(data))
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


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
) -> IndexResult:
    """Index one single-platform image. Never raises for a bad image: returns a failed result.

    ``open_layer(digest)`` returns a readable stream of the layer blob as stored (compressed);
    every layer not in ``cache`` is read exactly once, start to end. ``on_entry(entry, stream)``
    is called for every tar entry of every layer read (content checks ride along on the same
    read); with it set, the caches are written but not read, so the hook sees every layer.
    """
    digest = manifest_digest or digest_bytes(manifest)
    if cache is not None and on_entry is None:
        hit = cache.get("image", INDEXER_VERSION, digest)
        if hit is not None:
            return IndexResult.from_json(hit)
    try:
        parsed = ImageManifest.parse(manifest, digest)
        result = _index(parsed, config, open_layer, cache, limits or Limits(), progress, detectors, on_entry)
    except (IndexFailed, OciError) as exc:
        return IndexResult("failed", digest, error=getattr(exc, "reason", None) or str(exc))
    except OSError as exc:
        return IndexResult("failed", digest, error=f"I/O error: {exc}")
    except Exception as exc:  # the server must stay up whatever an image contains
        return IndexResult("failed", digest, error=f"internal error: {type(exc).__name__}: {exc}")
    if cache is not None:
        cache.put("image", INDEXER_VERSION, digest, result.to_json())
    return result


def _index(
    manifest: ImageManifest,
    config: bytes,
    open_layer: Callable[[str], BinaryIO],
    cache: IndexCache | None,
    limits: Limits,
    progress: Progress | None,
    detectors: Sequence[Detector] | None,
    on_entry: EntryHook | None = None,
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
        use_cache = cache is not None and on_entry is None
        hit = cache.get("layer", INDEXER_VERSION, desc.digest) if use_cache and cache is not None else None
        if hit is not None:
            facts.append(LayerFacts.from_json(hit))
            advance(max(desc.size, 0))
            continue
        with open_layer(desc.digest) as raw:
            stream: BinaryIO = raw
            if progress is not None:
                stream = io.BufferedReader(_ProgressReader(raw, advance), 1 << 16)  # type: ignore[assignment]
            lf = scan_layer(iter_layer(stream, desc, i, limits), desc.digest, dets, limits, on_entry)
        facts.append(lf)
        if cache is not None:
            cache.put("layer", INDEXER_VERSION, desc.digest, lf.to_json())
    merged = merge(facts, dets, limits)
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

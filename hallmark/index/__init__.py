"""The indexer: an image's layers, read once, into a package inventory and SBOMs.

Public API::

    from hallmark.index import index_image, FileCache
    result = index_image(manifest_bytes, config_bytes, open_layer,  # open_layer(digest) -> binary stream
                         cache=FileCache(dir), on_entry=None)      # never raises for a bad image
    result.status, result.failure        # "done" | "failed", "index failed: <reason>"
    result.packages, result.distro       # list[hallmark.model.Package], hallmark.model.Distro | None
    from hallmark.index.sbom import to_cyclonedx, to_spdx, to_hallmark_json
    to_cyclonedx(result, "registry/repo:tag")  # CycloneDX 1.6 JSON text

    # content checks: every entry of every layer, with bytes, in one read
    from hallmark.index import walk_layers           # standalone walk (no indexing)
    index_image(..., on_entry=lambda entry, stream: ...)  # or ride along the indexer's own read
"""

from hallmark.index.cache import FileCache, IndexCache, MemoryCache
from hallmark.index.indexer import INDEXER_VERSION, IndexResult, index_image, index_source
from hallmark.index.limits import IndexFailed, Limits
from hallmark.index.walker import LayerEntry, iter_layer, walk_layers

__all__ = [
    "INDEXER_VERSION",
    "FileCache",
    "IndexCache",
    "IndexFailed",
    "IndexResult",
    "LayerEntry",
    "Limits",
    "MemoryCache",
    "index_image",
    "index_source",
    "iter_layer",
    "walk_layers",
]

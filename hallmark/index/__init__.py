"""The indexer: an image's layers, read once, into a package inventory and SBOMs.

Public API::

    from hallmark.index import index_image, index_source, IndexResult, FileCache
    result = index_image(manifest_bytes, config_bytes, open_layer)  # open_layer(digest) -> stream
    result.packages, result.distro, result.failure
    from hallmark.index.sbom import to_cyclonedx, to_spdx
    from hallmark.index.walker import walk_layers  # every file of every layer, for content checks
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

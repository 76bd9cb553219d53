"""Index caches keyed by content digest: one per layer (shared base layers are read once) and one per image.

Keys carry :data:`hallmark.index.INDEXER_VERSION`, so bumping it re-indexes everything without
any purge. :class:`FileCache` is the filesystem implementation (zstd-compressed JSON); the
server can plug a database-backed one by implementing :class:`IndexCache`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Protocol

import orjson
import zstandard

from hallmark.digest import parse_digest


class IndexCache(Protocol):
    """Opaque JSON documents by (kind, indexer version, digest); kind is "layer" or "image"."""

    def get(self, kind: str, version: str, digest: str) -> dict[str, Any] | None: ...

    def put(self, kind: str, version: str, digest: str, doc: dict[str, Any]) -> None: ...


class MemoryCache:
    """A dict-backed cache (tests, one-shot CLI runs)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str, str], bytes] = {}

    def get(self, kind: str, version: str, digest: str) -> dict[str, Any] | None:
        raw = self.docs.get((kind, version, digest))
        return orjson.loads(raw) if raw is not None else None

    def put(self, kind: str, version: str, digest: str, doc: dict[str, Any]) -> None:
        self.docs[(kind, version, digest)] = orjson.dumps(doc)


class FileCache:
    """``ROOT/<kind>/<version>/<algo>/<hex>.json.zst``, written atomically (rename) so readers never see halves."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, kind: str, version: str, digest: str) -> str:
        algo, hexpart = parse_digest(digest)  # validates: no path tricks through the key
        if not kind.isalnum() or not version.replace(".", "").isalnum():
            raise ValueError(f"bad cache key {kind!r}/{version!r}")
        return os.path.join(self.root, kind, version, algo, f"{hexpart}.json.zst")

    def get(self, kind: str, version: str, digest: str) -> dict[str, Any] | None:
        try:
            with open(self._path(kind, version, digest), "rb") as f:
                return orjson.loads(zstandard.ZstdDecompressor().decompress(f.read()))
        except FileNotFoundError:
            return None
        except (zstandard.ZstdError, orjson.JSONDecodeError):
            return None  # a damaged entry is a miss, and gets rewritten

    def put(self, kind: str, version: str, digest: str, doc: dict[str, Any]) -> None:
        path = self._path(kind, version, digest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = zstandard.ZstdCompressor(level=6).compress(orjson.dumps(doc))
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

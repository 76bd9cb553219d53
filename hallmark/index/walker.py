"""Streaming layer walker: every layer blob is read once, decompressed on the fly, never unpacked.

This is the generic part shared by the package indexer and by content checks (malware,
secrets): :func:`walk_layers` yields each tar entry with its normalised path, layer index
and a way to stream its bytes. Whiteouts come out as their own entry kinds so that callers
choose: the indexer applies them, a secrets scanner still inspects the files they hide.

Hand-written because no library does the hostile-input part: ``tarfile`` happily yields
``../`` paths, silently stops on truncated plain tars and has no decompression-bomb guard.
Decompression itself is delegated to isal (gzip, ~3x faster than zlib) and zstandard.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, BinaryIO

import zstandard
from isal import igzip_threaded, isal_zlib

from hallmark.index.limits import IndexFailed, Limits
from hallmark.oci.source import Descriptor

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# entry kinds
FILE, DIR, SYMLINK, HARDLINK, WHITEOUT, OPAQUE, OTHER = (
    "file",
    "dir",
    "symlink",
    "hardlink",
    "whiteout",
    "opaque",
    "other",
)

_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (  # type: ignore[assignment]
    EOFError,
    OSError,
    zlib.error,
    isal_zlib.error,
    zstandard.ZstdError,
    tarfile.TarError,
)


class _Counter(io.RawIOBase):
    """Counts (and optionally hashes) the bytes flowing through, enforcing the layer limits."""

    def __init__(self, inner: IO[bytes], hasher: hashlib._Hash | None = None) -> None:
        self.inner = inner
        self.count = 0
        self.hasher = hasher
        self.check: Callable[[], None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.hasher is not None:
            self.hasher.update(data)
        if self.check is not None:
            self.check()
        return n


@dataclass
class LayerEntry:
    """One tar entry of one layer. ``open()`` streams a regular file; valid until the next entry."""

    path: str  # normalised, relative to the image root, no leading "/" ("" is the root itself)
    kind: str  # FILE, DIR, SYMLINK, HARDLINK, WHITEOUT, OPAQUE or OTHER
    size: int
    mode: int
    linkname: str  # symlink target as written, or normalised hardlink target path
    layer_index: int
    layer_digest: str
    _tar: tarfile.TarFile | None = field(default=None, repr=False)
    _info: tarfile.TarInfo | None = field(default=None, repr=False)

    def open(self) -> IO[bytes]:
        """Stream this regular file's bytes (only before the walker moves on)."""
        if self.kind != FILE or self._tar is None or self._info is None:
            raise ValueError(f"{self.path} is not a regular file")
        f = self._tar.extractfile(self._info)
        if f is None:
            raise ValueError(f"{self.path} has no data")
        return io.BufferedReader(_GuardedReader(f, f"layer {self.layer_index} ({self.layer_digest[:19]})"))

    def read(self, limit: int) -> bytes:
        """All bytes of this file; raises :class:`FileTooLarge` past ``limit``."""
        if self.size > limit:
            raise FileTooLarge(f"/{self.path}: {self.size} bytes exceeds the per-file limit of {limit}")
        with self.open() as f:
            data = f.read(limit + 1)
        if len(data) != self.size:
            raise IndexFailed(f"layer {self.layer_digest}: truncated archive (short read of /{self.path})")
        return data


class _GuardedReader(io.RawIOBase):
    """A member's data stream whose decompression/truncation errors become :class:`IndexFailed`."""

    def __init__(self, inner: IO[bytes], label: str) -> None:
        self.inner = inner
        self.label = label

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except _DECOMPRESS_ERRORS as exc:
            raise IndexFailed(f"{self.label}: truncated or corrupt archive: {exc or type(exc).__name__}") from exc
        buffer[: len(data)] = data
        return len(data)


class FileTooLarge(Exception):
    """A single file is over :attr:`Limits.max_file_bytes` (the file is skipped, not the image)."""


def normalize_path(name: str, limits: Limits, what: str = "entry") -> str:
    """Archive path -> image path, rejecting traversal: absolute names and ``..`` escaping the root."""
    if len(name) > limits.max_path_length:
        raise IndexFailed(f"path traversal guard: {what} name longer than {limits.max_path_length}")
    if "\x00" in name:
        raise IndexFailed(f"path traversal guard: {what} {name!r} contains NUL")
    if name.startswith("/"):
        raise IndexFailed(f"path traversal guard: absolute {what} path {name!r}")
    p = posixpath.normpath(name) if name else "."
    if p == ".." or p.startswith("../"):
        raise IndexFailed(f"path traversal guard: {what} {name!r} escapes the image root")
    return "" if p == "." else p


def _decompressor(counted: IO[bytes]) -> IO[bytes]:
    """Pick the decompressor by magic bytes: media types lie (docker-archive layers, foreign tools)."""
    buffered = io.BufferedReader(counted, 1 << 16)  # type: ignore[arg-type,type-var]
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        return igzip_threaded.open(buffered, "rb", threads=1)  # type: ignore[no-any-return]
    if magic == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[no-any-return]
    return buffered


def iter_layer(
    blob: BinaryIO, desc: Descriptor, index: int, limits: Limits | None = None, verify: bool = True
) -> Iterator[LayerEntry]:
    """Yield the entries of one layer blob, enforcing ``limits``; raises :class:`IndexFailed`.

    With ``verify`` the blob's digest is checked once the stream is exhausted, so a cache keyed
    by layer digest can never be poisoned by a source that serves other bytes.
    """
    limits = limits or Limits()
    algo = desc.digest.partition(":")[0]
    hasher = hashlib.new(algo) if verify else None
    raw = _Counter(blob, hasher)
    label = f"layer {index} ({desc.digest[:19]})"
    plain: _Counter | None = None
    try:
        decompressed = _decompressor(raw)  # type: ignore[arg-type]
        plain = _Counter(decompressed)

        def check() -> None:
            assert plain is not None
            if plain.count > limits.max_layer_bytes:
                raise IndexFailed(f"{label}: more than {limits.max_layer_bytes} uncompressed bytes")
            if plain.count > limits.bomb_floor and plain.count > limits.max_ratio * max(raw.count, 1):
                raise IndexFailed(
                    f"{label}: decompression bomb guard: {plain.count} bytes from {raw.count} "
                    f"(ratio over {limits.max_ratio:g})"
                )

        plain.check = check
        tar = tarfile.open(fileobj=plain, mode="r|")  # type: ignore[call-overload]
        count = 0
        data_end = 0
        while True:
            info = tar.next()
            if info is None:
                break
            tar.members = []  # type: ignore[attr-defined]  # stream mode keeps every header otherwise
            count += 1
            if count > limits.max_entries_per_layer:
                raise IndexFailed(f"{label}: more than {limits.max_entries_per_layer} entries")
            if info.isreg():
                data_end = info.offset_data + info.size
            yield _entry(tar, info, index, desc.digest, limits)
        if plain.count < data_end:
            raise IndexFailed(f"{label}: truncated archive (data ends at {plain.count}, need {data_end})")
        while plain.read(1 << 20):  # rest of the stream: gzip CRC/trailer check, hashing
            pass
        while raw.read(1 << 20):
            pass
    except IndexFailed:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise IndexFailed(f"{label}: truncated or corrupt archive: {exc or type(exc).__name__}") from exc
    if hasher is not None and f"{algo}:{hasher.hexdigest()}" != desc.digest:
        raise IndexFailed(f"{label}: content does not match its digest {desc.digest}")


def _entry(tar: tarfile.TarFile, info: tarfile.TarInfo, index: int, digest: str, limits: Limits) -> LayerEntry:
    path = normalize_path(info.name, limits)
    base = posixpath.basename(path)
    linkname = ""
    if base.startswith(WHITEOUT_PREFIX):
        parent = posixpath.dirname(path)
        if base == OPAQUE_MARKER:
            kind, path = OPAQUE, parent
        elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            kind = OTHER  # aufs bookkeeping (.wh..wh.plnk etc.), not content
        else:
            kind, path = WHITEOUT, normalize_path(posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]), limits)
            if not path:
                raise IndexFailed(f"path traversal guard: whiteout {info.name!r} would delete the image root")
    elif info.isreg():
        kind = FILE
    elif info.isdir():
        kind = DIR
    elif info.issym():
        kind, linkname = SYMLINK, info.linkname
    elif info.islnk():
        kind, linkname = HARDLINK, normalize_path(info.linkname, limits, "hardlink target")
    else:
        kind = OTHER
    return LayerEntry(path, kind, info.size, info.mode, linkname, index, digest, tar, info)


def walk_layers(
    layers: Sequence[Descriptor],
    open_blob: Callable[[Descriptor], BinaryIO],
    limits: Limits | None = None,
    verify: bool = True,
) -> Iterator[LayerEntry]:
    """Every entry of every layer, bottom layer first. For content checks::

    for e in walk_layers(manifest.layers, source.open_blob):
        if e.kind == FILE:
            with e.open() as f: scan(e.path, e.layer_index, f)
    """
    for i, desc in enumerate(layers):
        with open_blob(desc) as blob:
            yield from iter_layer(blob, desc, i, limits, verify)

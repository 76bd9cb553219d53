"""Streaming layer walker: every layer blob is read once, decompressed on the fly, never unpacked.

This is the generic part shared by the package indexer and by content checks (malware,
secrets): :func:`walk_layers` yields each tar entry with its normalised path, layer index
and a way to stream its bytes. Whiteouts come out as their own entry kinds so that callers
choose: the indexer applies them, a secrets scanner still inspects the files they hide.

Decompression is delegated to isal (gzip, ~3x faster than zlib, in a helper thread) and
zstandard. The tar reader is hand-written on purpose: ``tarfile`` happily yields ``../``
paths, silently stops on truncated plain tars, has no bomb guard, and in stream mode costs
~3x more per header than this reader (it dominated indexing time on real images). Only what
image layers use is supported: ustar/GNU/PAX headers, GNU long names, PAX path/linkpath/size;
sparse files (old GNU and PAX) are kept in step but not read.

Hostile input: sizes are checked before use (a negative PAX ``size`` once made the reader seek
back and re-read one header two million times), and the read position only ever moves
forward. Names are kept byte-exact (``surrogateescape``, see :mod:`hallmark.index.names`);
absolute names are taken as relative to the image root, as container runtimes do, and a
single entry whose name cannot be used is skipped with a warning instead of failing the image.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, BinaryIO, cast

import zstandard
from isal import igzip, isal_zlib

from hallmark.index.inflate import ForkedGunzip, forked_gunzip
from hallmark.index.limits import Budget, IndexFailed, Limits
from hallmark.index.names import display
from hallmark.oci.source import Descriptor

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# entry kinds
FILE, DIR, SYMLINK, HARDLINK, WHITEOUT, OPAQUE, SPARSE, OTHER = (
    "file",
    "dir",
    "symlink",
    "hardlink",
    "whiteout",
    "opaque",
    "sparse",  # a GNU sparse file: its stored bytes are not the file's contents, so it is not read
    "other",
)

Warn = Callable[[str], None]
_DECIMAL = re.compile(rb"[0-9]{1,19}")  # PAX numbers: plain decimal, no sign, no spaces, no "_"
MAX_EXTENDED_HEADER = 1 << 20
MAX_SKIP_WARNINGS = 20  # per layer; then one line with the count (a hostile layer may have millions)

_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (  # type: ignore[assignment]
    EOFError,
    OSError,
    zlib.error,
    isal_zlib.error,
    zstandard.ZstdError,
)


class _Counter(io.RawIOBase):
    """Counts (and optionally hashes) the bytes flowing through, enforcing the layer limits."""

    def __init__(
        self, inner: IO[bytes], hasher: hashlib._Hash | None = None, on_read: Callable[[int], None] | None = None
    ) -> None:
        self.inner = inner
        self.count = 0
        self.hasher = hasher
        self.on_read = on_read  # told how many bytes each read gave (progress)
        self.check: Callable[[], None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """The inner stream's bytes as they are: ``RawIOBase.read`` would copy them twice (into a
        buffer for ``readinto``, then out of it), two passes over every decompressed byte."""
        data = self.inner.read(size)
        self.count += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self.on_read is not None and data:
            self.on_read(len(data))
        if self.check is not None:
            self.check()
        return data


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
    _reader: TarReader | None = field(default=None, repr=False)
    _serial: int = field(default=-1, repr=False)

    def open(self) -> IO[bytes]:
        """Stream this regular file's bytes (only before the walker moves on, and only once)."""
        if self.kind != FILE or self._reader is None:
            raise ValueError(f"{self.path} is not a regular file")
        return io.BufferedReader(_MemberReader(self._reader, self._serial), 1 << 16)

    def read(self, limit: int) -> bytes:
        """All bytes of this file; raises :class:`FileTooLarge` past ``limit``."""
        if self.size > limit:
            raise FileTooLarge(f"/{self.path}: {self.size} bytes exceeds the per-file limit of {limit}")
        with self.open() as f:
            data = f.read(limit + 1)
        if len(data) != self.size:
            raise IndexFailed(f"layer {self.layer_digest}: truncated archive (short read of /{self.path})")
        return data


class TarReader:
    """A forward-only tar reader over a decompressed stream, reading in large chunks."""

    CHUNK = 1 << 20

    def __init__(self, stream: IO[bytes], label: str, max_size: int = 1 << 62) -> None:
        self.stream = stream
        self.label = label
        self.max_size = max_size  # an entry larger than its whole layer may be is a lie
        self.buf = b""
        self.pos = 0
        self.remaining = 0  # data bytes of the current member not yet consumed
        self.padding = 0  # then this many bytes up to the next 512 boundary
        self.serial = 0  # increments per header, so a stale member reader cannot read on
        self.consumed = 0  # bytes taken from ``stream`` so far
        self.sparse = False  # the entry last returned by next() is a sparse file

    @property
    def offset(self) -> int:
        """Position in the tar stream of the next byte to be read; it never decreases."""
        return self.consumed - (len(self.buf) - self.pos)

    def _read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or IndexFailed (truncated)."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            out = self.buf[self.pos : self.pos + n]
            self.pos += n
            return out
        parts = [self.buf[self.pos :]]
        need = n - avail
        self.buf, self.pos = b"", 0
        while need > 0:
            chunk = self._chunk()
            if not chunk:
                raise IndexFailed(f"{self.label}: truncated archive (stream ended inside an entry)")
            if len(chunk) > need:
                parts.append(chunk[:need])
                self.buf, self.pos = chunk, need
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        return b"".join(parts)

    def _chunk(self) -> bytes:
        try:
            data = self.stream.read(self.CHUNK)
        except _DECOMPRESS_ERRORS as exc:
            raise IndexFailed(f"{self.label}: truncated or corrupt archive: {exc or type(exc).__name__}") from exc
        self.consumed += len(data)
        return data

    def _skip(self, n: int) -> None:
        if n < 0:  # never reached with checked sizes; a backward move would re-read old headers forever
            raise IndexFailed(f"{self.label}: corrupt archive (negative skip)")
        avail = len(self.buf) - self.pos
        if avail >= n:
            self.pos += n
            return
        n -= avail
        self.buf, self.pos = b"", 0
        while n > 0:
            chunk = self._chunk()
            if not chunk:
                raise IndexFailed(f"{self.label}: truncated archive (stream ended inside an entry)")
            if len(chunk) > n:
                self.buf, self.pos = chunk, n
                return
            n -= len(chunk)

    def read_member_into(self, buffer: memoryview) -> int:
        """Bytes of the current member into ``buffer`` (as many as the current chunk has): one
        copy, where slicing the chunk and copying the slice took two. 0 at the member's end."""
        n = min(len(buffer), self.remaining)
        if n <= 0:
            return 0
        avail = len(self.buf) - self.pos
        if avail == 0:
            self.buf, self.pos = self._chunk(), 0
            avail = len(self.buf)
            if not avail:
                raise IndexFailed(f"{self.label}: truncated archive (stream ended inside an entry)")
        n = min(n, avail)
        buffer[:n] = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        self.remaining -= n
        return n

    def _finish_member(self) -> None:
        self._skip(self.remaining + self.padding)
        self.remaining = self.padding = 0

    def next(self) -> tuple[str, str, str, int, int] | None:
        """(name, type flag, link name, size, mode) of the next real entry, or None at the end."""
        self._finish_member()
        long_name = long_link = None
        pax: dict[str, str] = {}
        while True:
            avail = len(self.buf) - self.pos
            if avail < 512:
                more = self._chunk()
                if not more and avail == 0:
                    return None  # end of stream without the zero blocks: tolerated, as GNU tar does
                self.buf, self.pos = self.buf[self.pos :] + more, 0
            block = self._read(512)
            if block.count(0) == 512:
                return None  # end-of-archive marker
            stored = _number(block[148:156], self.label)
            if stored != sum(block) - sum(block[148:156]) + 256:
                raise IndexFailed(f"{self.label}: corrupt archive (bad tar header checksum)")
            flag = chr(block[156]) if block[156] else "0"
            size = _number(block[124:136], self.label)
            if size < 0:
                raise IndexFailed(f"{self.label}: corrupt archive (negative entry size)")
            if flag in "LKxg":
                if size > MAX_EXTENDED_HEADER:
                    raise IndexFailed(f"{self.label}: corrupt archive (oversized extended header)")
                data = self._read(size)
                self._skip(-size % 512)
                if flag == "L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif flag == "K":
                    long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif flag == "x":
                    pax.update(_pax(data, self.label))
                continue  # global headers ('g') carry nothing the walker uses
            name = _cstr(block[0:100])
            if block[257:262] == b"ustar" and block[345]:
                name = _cstr(block[345:500]) + "/" + name
            name = pax.get("path") or pax.get("GNU.sparse.name") or long_name or name
            link = pax.get("linkpath") or long_link or _cstr(block[157:257])
            if "size" in pax:
                size = _pax_number(pax["size"], "size", self.label)
            self.sparse = flag == "S" or "GNU.sparse.major" in pax or "GNU.sparse.map" in pax
            for key in ("GNU.sparse.realsize", "GNU.sparse.size"):
                if key in pax:
                    _pax_number(pax[key], key, self.label)
            if flag == "S":
                self._gnu_sparse_map(block)
            if flag in "1256734":  # links, dirs and devices have no data, whatever the size field says
                size = size if flag == "7" else 0
            if size > self.max_size:
                raise IndexFailed(f"{self.label}: corrupt archive (entry size {size} over the layer limit)")
            self.serial += 1
            self.remaining, self.padding = size, -size % 512
            return name, flag, link, size, _number(block[100:108], self.label)

    def _gnu_sparse_map(self, block: bytes) -> None:
        """Check an old-GNU sparse header and step over its extension blocks (they precede the data)."""
        entries = [block[386 + 24 * i : 410 + 24 * i] for i in range(4)]
        realsize = _number(block[483:495], self.label)
        extended, blocks = block[482], 0
        while extended:
            blocks += 1
            if blocks * 512 > MAX_EXTENDED_HEADER:
                raise IndexFailed(f"{self.label}: corrupt archive (oversized sparse map)")
            ext = self._read(512)
            entries += [ext[24 * i : 24 * i + 24] for i in range(21)]
            extended = ext[504]
        for e in entries:
            offset, length = _number(e[:12], self.label), _number(e[12:], self.label)
            if offset < 0 or length < 0 or offset + length > realsize or realsize < 0:
                raise IndexFailed(f"{self.label}: corrupt archive (inconsistent sparse map)")

    def drain(self) -> None:
        self._finish_member()
        while self._chunk():
            pass


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field_: bytes, label: str) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field_[1:], "big")
        return value - (1 << (8 * len(field_) - 1)) if field_[0] & 0x40 else value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise IndexFailed(f"{label}: corrupt archive (bad number in tar header)") from exc


def _pax_number(value: str, key: str, label: str) -> int:
    """A PAX size field: a plain non-negative decimal (``int()`` would take "-1536", " 5" or "1_0")."""
    raw = value.encode("utf-8", "surrogateescape")
    if not _DECIMAL.fullmatch(raw):
        raise IndexFailed(f"{label}: corrupt archive (bad PAX {key} {display(value)!r})")
    return int(raw)


def _pax(data: bytes, label: str) -> dict[str, str]:
    """PAX records: ``"<len> <key>=<value>\\n"``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0 or not data[pos:sp].isdigit():
            break
        length = int(data[pos:sp])
        if length <= 0:
            raise IndexFailed(f"{label}: corrupt archive (bad PAX record)")
        record = data[sp + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _MemberReader(io.RawIOBase):
    """The current member's bytes; reads end (EOF) once the walker has moved to another entry."""

    def __init__(self, reader: TarReader, serial: int) -> None:
        self.reader = reader
        self.serial = serial

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.reader.serial != self.serial:
            return 0
        return self.reader.read_member_into(buffer)


class FileTooLarge(Exception):
    """A single file is over :attr:`Limits.max_file_bytes` (the file is skipped, not the image)."""


class BadEntry(Exception):
    """One entry whose name cannot be used (NUL, too long): skipped with a warning, the layer goes on."""


def normalize_path(name: str, limits: Limits, what: str = "entry") -> str:
    """Archive path -> image path. Leading "/" is dropped (runtimes extract absolute names under the
    root); ``..`` escaping the root is a traversal attempt and fails the image (:class:`IndexFailed`);
    an unusable name raises :class:`BadEntry`."""
    if len(name) > limits.max_path_length:
        raise BadEntry(f"{what} name longer than {limits.max_path_length}")
    if "\x00" in name:
        raise BadEntry(f"{what} {display(name)!r} contains NUL")
    p = posixpath.normpath(name.lstrip("/")) if name.lstrip("/") else "."
    if p == ".." or p.startswith("../"):
        raise IndexFailed(f"path traversal guard: {what} {display(name)!r} escapes the image root")
    return "" if p == "." else p


def _decompressor(counted: IO[bytes]) -> IO[bytes]:
    """Pick the decompressor by magic bytes: media types lie (docker-archive layers, foreign tools)."""
    buffered = io.BufferedReader(counted, 1 << 16)  # type: ignore[type-var]
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        # In-thread on purpose: isal's threaded reader, left to the garbage collector, can be finalised
        # inside threading's own lock when another thread starts and deadlock the process.
        return igzip.IGzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return buffered


def iter_layer(
    blob: BinaryIO,
    desc: Descriptor,
    index: int,
    limits: Limits | None = None,
    verify: bool = True,
    warn: Warn | None = None,
    budget: Budget | None = None,
    inflate_apart: bool = False,
    on_raw: Callable[[int], None] | None = None,
) -> Iterator[LayerEntry]:
    """Yield the entries of one layer blob, enforcing ``limits``; raises :class:`IndexFailed`.

    With ``verify`` the blob's digest is checked once the stream is exhausted, so a cache keyed
    by layer digest can never be poisoned by a source that serves other bytes. Entries skipped
    for a bad name are reported through ``warn``; ``budget`` bounds the wall-clock time.
    ``inflate_apart``: a gzip layer in a regular file is decompressed (and hashed) by a forked
    child (:mod:`hallmark.index.inflate`), for a caller with a core to spare. ``on_raw`` is told
    how many more of the blob's (compressed) bytes were read, as they are (progress).
    """
    limits = limits or Limits()
    algo = desc.digest.partition(":")[0]
    hasher = hashlib.new(algo) if verify else None
    raw = _Counter(blob, hasher, on_raw)
    label = f"layer {index} ({desc.digest[:19]})"
    plain: _Counter | None = None
    decompressed: IO[bytes] | None = None
    apart = forked_gunzip(blob, algo if verify else None, on_raw) if inflate_apart else None
    try:
        decompressed = cast(IO[bytes], apart) if apart is not None else _decompressor(raw)  # type: ignore[arg-type]
        plain = _Counter(decompressed)

        def check() -> None:
            assert plain is not None
            raw_count = apart.raw_count if apart is not None else raw.count
            if plain.count > limits.max_layer_bytes:
                raise IndexFailed(f"{label}: more than {limits.max_layer_bytes} uncompressed bytes")
            if plain.count > limits.bomb_floor and plain.count > limits.max_ratio * max(raw_count, 1):
                raise IndexFailed(
                    f"{label}: decompression bomb guard: {plain.count} bytes from {raw_count} "
                    f"(ratio over {limits.max_ratio:g})"
                )
            if budget is not None:
                budget.check_time()

        plain.check = check
        reader = TarReader(plain, label, limits.max_layer_bytes)  # type: ignore[arg-type]
        count = skipped = 0
        while True:
            header = reader.next()
            if header is None:
                break
            count += 1
            if count > limits.max_entries_per_layer:
                raise IndexFailed(f"{label}: more than {limits.max_entries_per_layer} entries")
            if budget is not None and count % 256 == 0:
                budget.check_time()
            try:
                entry = _entry(reader, header, index, desc.digest, limits)
            except BadEntry as exc:
                skipped += 1
                if warn is not None and skipped <= MAX_SKIP_WARNINGS:
                    warn(f"{label}: entry skipped: {exc}")
                continue
            yield entry
        if warn is not None and skipped > MAX_SKIP_WARNINGS:
            warn(f"{label}: {skipped - MAX_SKIP_WARNINGS} more entries skipped for their names")
        reader.drain()  # rest of the stream: gzip CRC/trailer check, hashing
        while apart is None and raw.read(1 << 20):
            pass
    except IndexFailed:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise IndexFailed(f"{label}: truncated or corrupt archive: {exc or type(exc).__name__}") from exc
    finally:
        if isinstance(decompressed, (igzip.IGzipFile, ForkedGunzip)):
            decompressed.close()  # leaves the blob open: the caller owns it
    digest = apart.digest if apart is not None else hasher.hexdigest() if hasher is not None else None
    if verify and f"{algo}:{digest}" != desc.digest:
        raise IndexFailed(f"{label}: content does not match its digest {desc.digest}", layer=False, cache=False)


def _entry(
    reader: TarReader, header: tuple[str, str, str, int, int], index: int, digest: str, limits: Limits
) -> LayerEntry:
    name, flag, link, size, mode = header
    path = normalize_path(name, limits)
    base = path.rpartition("/")[2]
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
                raise IndexFailed(f"path traversal guard: whiteout {display(name)!r} would delete the image root")
    elif reader.sparse:
        kind = SPARSE
    elif flag in "07":
        kind = FILE
    elif flag == "5":
        kind = DIR
    elif flag == "2":
        kind, linkname = SYMLINK, link
    elif flag == "1":
        kind, linkname = HARDLINK, normalize_path(link, limits, "hardlink target")
        if not linkname:
            raise BadEntry(f"hardlink {display(name)!r} to the image root")
    else:
        kind = OTHER
    return LayerEntry(path, kind, size, mode, linkname, index, digest, reader, reader.serial)


def walk_layers(
    layers: Sequence[Descriptor],
    open_blob: Callable[[Descriptor], BinaryIO],
    limits: Limits | None = None,
    verify: bool = True,
    warn: Warn | None = None,
) -> Iterator[LayerEntry]:
    """Every entry of every layer, bottom layer first. For content checks::

    for e in walk_layers(manifest.layers, source.open_blob):
        if e.kind == FILE:
            with e.open() as f: scan(e.path, e.layer_index, f)
    """
    for i, desc in enumerate(layers):
        with open_blob(desc) as blob:
            yield from iter_layer(blob, desc, i, limits, verify, warn)

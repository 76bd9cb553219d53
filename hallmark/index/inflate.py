"""A gzip layer decompressed in a forked child process, for a reader that has CPU to spare beside it.

Why: in ``hallmark scan`` the process that walks the layers is the one the others wait for, and
decompressing a layer is a quarter of its work (isal: ~0.36 s for a 241 MB layer here); the
content-check worker beside it is idle a third of the time. isal does release the GIL, but a
thread in the walking process gets it back only at the interpreter's switch interval, once per
chunk, and was measured no faster (docs/performance.md). So a child reads the blob file itself
(``pread`` from the same descriptor: nothing is copied to it), hashes the compressed bytes for the
digest check, decompresses with isal into a ring of 1 MiB slots in memory shared with the parent,
and tells the parent over a pipe which slot holds how much; the parent copies each slot out once
(the tar reader keeps ``bytes``) and hands the slot back. The ring bounds what the child can run
ahead (a decompression bomb fills 8 MiB, then the parent's limits stop it).

The parent sees what an in-process reader would give: the same bytes, the same compressed-byte
count for the bomb guard (``raw_count``), the same digest, and the same exception text when the
stream is corrupt. Only a regular file is read this way (``fork`` and ``pread`` need one); other
blobs, and zstd layers, are decompressed in the walking process as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import signal
import stat
import struct
from collections.abc import Callable
from typing import IO, Any

SLOT = 1 << 20
SLOTS = 8
# per slot: its index (-1: the end), the bytes in it (at the end: the length of the text that
# follows), and the compressed bytes read so far
_RECORD = struct.Struct("<iIQ")
_END = -1


class InflateError(OSError):
    """The child's decompressor failed; the message is the one the in-process reader would give."""


class InflateStopped(Exception):
    """The child stopped without a word (killed): not the layer's fault, so not an ``OSError`` that
    would fail the layer as corrupt (and be cached so)."""


def spare_core() -> bool:
    """Whether this process may use more than one core (then decompressing apart pays)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return (os.cpu_count() or 1) > 1


def forked_gunzip(
    blob: IO[bytes], algo: str | None, on_raw: Callable[[int], None] | None = None
) -> ForkedGunzip | None:
    """A reader of ``blob``'s decompressed bytes from a forked child, or None when ``blob`` is not a
    gzip regular file (read it in this process then). ``algo``: hash the compressed bytes with it;
    ``on_raw``: told how many more compressed bytes the child read, as its slots arrive (progress)."""
    try:
        fd = blob.fileno()
        start = blob.tell()
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.pread(fd, 2, start) != b"\x1f\x8b":
            return None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return ForkedGunzip(fd, start, algo, on_raw)


class ForkedGunzip(io.RawIOBase):
    """``read`` gives the decompressed layer; after the end, ``digest`` is the compressed bytes' hex
    digest (or None without ``algo``). ``close`` stops the child if it is still running."""

    def __init__(self, fd: int, start: int, algo: str | None, on_raw: Callable[[int], None] | None = None) -> None:
        self.raw_count = 0
        self._on_raw = on_raw
        self.digest: str | None = None
        self._map = mmap.mmap(-1, SLOT * SLOTS)
        self._buf = b""
        self._pos = 0
        self._done = False
        notify_r, notify_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (its work is checked through the parent)
            code = 0
            try:
                os.close(notify_r)
                os.close(ack_w)
                _child(fd, start, algo, self._map, notify_w, ack_r)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(notify_w)
        os.close(ack_r)
        self._pid: int | None = pid
        self._notify = io.FileIO(notify_r, "rb")
        self._ack = ack_w

    @property
    def pid(self) -> int | None:
        """The child's process id while it has not been waited for."""
        return self._pid

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (the rest of the current slot at most); b"" at the end."""
        if size == 0:
            return b""
        if self._pos >= len(self._buf):
            if self._done or not self._next():
                return b""
        if size is None or size < 0 or size >= len(self._buf) - self._pos:
            out = self._buf[self._pos :] if self._pos else self._buf
        else:
            out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def _next(self) -> bool:
        """Take the next slot (and hand it back); False at the end (or raise the child's error)."""
        slot, n, raw_count = _RECORD.unpack(self._exactly(_RECORD.size))
        if self._on_raw is not None and raw_count > self.raw_count:
            self._on_raw(raw_count - self.raw_count)
        self.raw_count = raw_count
        if slot != _END:
            offset = slot * SLOT
            self._buf, self._pos = self._map[offset : offset + n], 0
            with contextlib.suppress(BrokenPipeError):  # the child wrote its last slot and is gone
                os.write(self._ack, b"x")
            return True
        self._done = True
        kind, _, text = self._exactly(n).decode("utf-8", "replace").partition("\0")
        self._reap()
        if kind == "error":
            raise InflateError(text)
        self.digest = text or None
        return False

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._notify.read(n - len(data))
            if not chunk:
                self._done = True
                self._reap()
                raise InflateStopped("the process decompressing the layer stopped")
            data += chunk
        return data

    def _reap(self) -> None:
        if self._pid is not None:
            pid, self._pid = self._pid, None
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def close(self) -> None:
        if self.closed:
            return
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap()
        self._notify.close()
        os.close(self._ack)
        self._buf = b""
        with contextlib.suppress(BufferError):
            self._map.close()
        super().close()


class _PRead(io.RawIOBase):
    """The blob from ``start``, read with ``pread`` (the parent's file offset is left alone)."""

    def __init__(self, fd: int, start: int, hasher: Any) -> None:
        self.fd = fd
        self.offset = start
        self.hasher = hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self.fd, len(buffer), self.offset)
        if self.hasher is not None:
            self.hasher.update(data)
        buffer[: len(data)] = data
        self.offset += len(data)
        return len(data)


def _child(fd: int, start: int, algo: str | None, ring: mmap.mmap, notify: int, acks: int) -> None:  # pragma: no cover
    """Decompress into the ring, one record per slot, then an end record: the digest, or the error."""
    from isal import igzip

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    hasher = hashlib.new(algo) if algo else None
    raw = _PRead(fd, start, hasher)
    view = memoryview(ring)
    free, slot = SLOTS, 0
    try:
        with igzip.IGzipFile(fileobj=io.BufferedReader(raw, 1 << 16), mode="rb") as gz:
            while True:
                while free == 0:
                    back = os.read(acks, SLOTS)
                    if not back:
                        return  # the parent is gone
                    free += len(back)
                n = gz.readinto(view[slot * SLOT : (slot + 1) * SLOT])
                if not n:
                    break
                os.write(notify, _RECORD.pack(slot, n, raw.offset - start))
                free -= 1
                slot = (slot + 1) % SLOTS
        while raw.readinto(bytearray(SLOT)):  # the rest of the blob, for the digest
            pass
        end = "digest\0" + (hasher.hexdigest() if hasher is not None else "")
    except Exception as exc:
        end = "error\0" + (str(exc) or type(exc).__name__)
    payload = end.encode("utf-8", "replace")
    os.write(notify, _RECORD.pack(_END, len(payload), raw.offset - start) + payload)


__all__ = ["ForkedGunzip", "InflateError", "InflateStopped", "forked_gunzip", "spare_core"]

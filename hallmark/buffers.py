"""Page-aligned, reused memory buffers for large transfers (O_DIRECT writes, socket I/O).

Anonymous ``mmap`` memory starts on a page boundary, which ``O_DIRECT`` requires, and the
kernel's copies to and from user memory run much faster from page-aligned buffers: a
1 GiB loopback send through a reused 2 MiB buffer measured 1.6-2.9 GB/s (median 2.5) from an ``mmap``
and 1.1-1.4 GB/s from a ``bytearray`` (malloc'd, 16-byte aligned), whatever the page size.
Reuse matters too: on a VM every first touch of a fresh page costs a fault.
"""

from __future__ import annotations

import mmap
import threading


def _allocate(size: int) -> memoryview:
    return memoryview(mmap.mmap(-1, size))


class AlignedBuffers:
    """A pool of ``size``-byte buffers; :meth:`take` one, :meth:`give` it back when done."""

    def __init__(self, size: int, keep: int = 8) -> None:
        self.size = size
        self._keep = keep
        self._free: list[memoryview] = []
        self._lock = threading.Lock()

    def take(self) -> memoryview:
        with self._lock:
            if self._free:
                return self._free.pop()
        return _allocate(self.size)

    def give(self, buf: memoryview) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)
        # Otherwise dropped: the mapping goes once no view of it is left.

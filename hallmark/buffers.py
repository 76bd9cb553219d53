"""Page-aligned, reused memory buffers for large transfers (O_DIRECT writes, socket reads).

Anonymous ``mmap`` memory starts on a page boundary, which ``O_DIRECT`` requires; reusing
buffers matters on VMs, where every first touch of a fresh page costs a fault.
"""

from __future__ import annotations

import contextlib
import mmap
import threading


class AlignedBuffers:
    def __init__(self, size: int, keep: int = 8) -> None:
        self.size = size
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)
                return
        with contextlib.suppress(BufferError):  # a view still referenced somewhere: leave it to GC
            buf.close()

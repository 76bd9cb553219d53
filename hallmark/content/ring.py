"""A ring of memory shared with a forked process, in spans that are freed in any order.

Why: the content-check workers (:mod:`hallmark.content.parallel`) get each small file's bytes
through it instead of a pipe: the reading process copies a file in once, the worker copies it out
once; pickling it through a pipe took four more passes, and the kernel's pipe copies were the
worker's largest cost after YARA. A span stays reserved until its owner frees it, so the bytes
are still there to be checked in the reading process should the worker die.
"""

from __future__ import annotations

import mmap
from collections import deque


class Ring:
    """Bytes shared with one worker: an anonymous ``MAP_SHARED`` mapping, made before the fork,
    used as a ring of spans. The reading process reserves a span and reads a file into it; the
    span is freed once the worker's outcome for it is back (until then it is this process's copy,
    should the worker die). Spans are freed in any order; the ring reuses space in order.
    Not thread-safe: the pool calls it under its lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size)  # anonymous: shared with the children forked after this
        self.head = 0  # positions are absolute (bytes ever reserved, skipped ends included)
        self.tail = 0  # everything before it is free
        self.spans: deque[list[int]] = deque()  # [start, end, freed], oldest first

    def reserve(self, n: int) -> list[int] | None:
        """A span of ``n`` contiguous bytes (its place is ``span[0] % size``), or None while
        the ring is too full. ``n`` is at most ``size``: an empty ring always has room."""
        if not self.spans:
            self.head = self.tail = 0
        pos = self.head % self.size
        start = self.head if pos + n <= self.size else self.head + self.size - pos  # no wrapping inside a file
        if start + n - self.tail > self.size:
            return None
        span = [start, start + n, 0]
        self.spans.append(span)
        self.head = start + n
        return span

    def view(self, span: list[int]) -> memoryview:
        offset = span[0] % self.size
        return memoryview(self.map)[offset : offset + span[1] - span[0]]

    def read(self, span: list[int]) -> bytes:
        """A copy of the span's bytes (``bytes``: yara-x takes nothing else)."""
        offset = span[0] % self.size
        return self.map[offset : offset + span[1] - span[0]]

    def free(self, span: list[int]) -> None:
        span[2] = 1
        while self.spans and self.spans[0][2]:
            self.tail = self.spans.popleft()[1]

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # pragma: no cover - a view still held somewhere: the GC unmaps it
            pass


__all__ = ["Ring"]

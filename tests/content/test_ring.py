"""The shared-memory ring that hands small files to content-check workers
(``hallmark.content.ring.Ring``): live spans never overlap, never wrap inside a file, and
space comes back once the oldest spans are freed, in whatever order spans are freed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hallmark.content.ring import Ring

SIZE = 4096


def _place(ring: Ring, span: list[int]) -> tuple[int, int]:
    start = span[0] % ring.size
    return start, start + span[1] - span[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, SIZE), st.integers(0, 10**6)), min_size=1, max_size=80))
def test_live_spans_never_overlap_and_an_empty_ring_always_has_room(ops: list[tuple[int, int]]) -> None:
    ring = Ring(SIZE)
    live: list[tuple[list[int], bytes]] = []
    for n, pick in ops:
        if live and pick % 3 == 0:  # free a live span, oldest or not
            old, kept = live.pop(pick % len(live))
            assert ring.read(old) == kept  # no later span overwrote it
            ring.free(old)
            continue
        span = ring.reserve(n)
        if span is None:
            assert live, "an empty ring must take any file up to its size"
            continue
        start, end = _place(ring, span)
        assert 0 <= start <= end <= SIZE  # contiguous: a file never wraps
        for other, _ in live:
            o_start, o_end = _place(ring, other)
            assert end <= o_start or o_end <= start or start == end or o_start == o_end
        data = random.Random(pick).randbytes(n)
        ring.view(span)[:] = data
        live.append((span, data))
    for span, data in live:
        assert ring.read(span) == data
        ring.free(span)
    assert ring.reserve(SIZE) is not None  # all freed: the whole ring is there again


def test_space_comes_back_only_past_the_oldest_live_span() -> None:
    ring = Ring(SIZE)
    a, b, c = ring.reserve(1024), ring.reserve(1024), ring.reserve(2048)
    assert a is not None and b is not None and c is not None
    assert ring.reserve(1) is None  # full
    ring.free(b)
    assert ring.reserve(1) is None  # b is free, but a before it still holds its place
    ring.free(a)
    d = ring.reserve(2048)  # a and b together
    assert d is not None and _place(ring, d) == (0, 2048)
    ring.free(c)
    e = ring.reserve(2048)
    assert e is not None and _place(ring, e) == (2048, 4096)


def test_a_file_that_does_not_fit_before_the_end_starts_at_the_beginning() -> None:
    ring = Ring(SIZE)
    a, b = ring.reserve(2000), ring.reserve(1500)
    assert a is not None and b is not None and _place(ring, b) == (2000, 3500)
    ring.free(a)
    assert ring.reserve(2001) is None  # 596 bytes at the end, 2000 at the beginning: a file is not split
    c = ring.reserve(2000)
    assert c is not None and _place(ring, c) == (0, 2000)
    assert ring.reserve(1) is None  # the skipped end counts as used while a span before it lives
    ring.free(b)
    assert ring.reserve(1501) is None  # ... and after b, until c is freed
    d = ring.reserve(1500)
    assert d is not None and _place(ring, d) == (2000, 3500)

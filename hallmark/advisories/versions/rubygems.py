"""RubyGems ``Gem::Version`` ordering.

Written by hand: there is no Python implementation of Gem::Version. Rules (from
rubygems/version.rb): ``-`` is read as ``.pre.``; segments are digit runs
(numbers) or letter runs (strings, which mark a pre-release); trailing zeros of
the numeric part and of the pre-release part are dropped; segments compare
pairwise with missing ones read as 0, and a string sorts before any number.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ._base import UnparseableVersion, cmp

NAME = "rubygems"

_VALID = re.compile(r"^\s*([0-9]+(?:\.[0-9a-zA-Z]+)*(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?\s*$")
_SEGMENT = re.compile(r"[0-9]+|[a-z]+", re.IGNORECASE)

Segment = int | str


def canonical_segments(version: str) -> tuple[Segment, ...]:
    """Gem::Version#canonical_segments."""
    if not _VALID.match(version):
        raise UnparseableVersion(NAME, version, "not a Gem::Version")
    v = version.strip() or "0"
    v = v.replace("-", ".pre.")
    segs: list[Segment] = [int(s) if s.isdigit() else s for s in _SEGMENT.findall(v)]
    first_str = next((i for i, s in enumerate(segs) if isinstance(s, str)), len(segs))
    out: list[Segment] = []
    for part in (segs[:first_str], segs[first_str:]):
        while part and part[-1] == 0:
            part.pop()
        out.extend(part)
    return tuple(out)


def compare_segments(a: tuple[Segment, ...], b: tuple[Segment, ...]) -> int:
    """Gem::Version#<=> on canonical segments."""
    for i in range(max(len(a), len(b))):
        lhs = a[i] if i < len(a) else 0
        rhs = b[i] if i < len(b) else 0
        if lhs == rhs:
            continue
        if isinstance(lhs, str) and isinstance(rhs, int):
            return -1
        if isinstance(lhs, int) and isinstance(rhs, str):
            return 1
        return cmp(lhs, rhs)
    return 0


_Key = functools.cmp_to_key(compare_segments)


def key(version: str) -> Any:
    """Sort key for a RubyGems version."""
    return _Key(canonical_segments(version))


def compare(a: str, b: str) -> int:
    """Compare two RubyGems versions (-1, 0, 1)."""
    return compare_segments(canonical_segments(a), canonical_segments(b))

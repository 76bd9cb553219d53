"""Debian (dpkg) version ordering, as in Debian Policy 5.6.12 and dpkg's ``verrevcmp``.

Written by hand because matching needs a precomputed sort key: python-debian only
compares pairwise (re-parsing each time). ``compare`` is the literal policy
algorithm; ``key`` encodes the same order as a flat tuple of ints, and the tests
check that both agree.

Key encoding: each non-digit run becomes its character weights (``~`` = -1,
letters = code point, other characters = code point + 256) followed by a 0
terminator ("end of run" sorts after ``~`` and before everything else); each
digit run becomes its integer value. A final 0 stands for "end of string", which
dpkg treats as an empty non-digit run.
"""

from __future__ import annotations

import re

from ._base import UnparseableVersion, cmp

NAME = "dpkg"

_UPSTREAM_OK = re.compile(r"^[0-9][A-Za-z0-9.+~:-]*$")
_REVISION_OK = re.compile(r"^[A-Za-z0-9.+~]*$")
_RUNS = re.compile(r"([^0-9]*)([0-9]*)")

Key = tuple[int, tuple[int, ...], tuple[int, ...]]


def _weight(c: str) -> int:
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def split(version: str) -> tuple[int, str, str]:
    """Split ``[epoch:]upstream[-revision]`` and validate it (raises UnparseableVersion)."""
    v = version.strip()
    if not v:
        raise UnparseableVersion(NAME, version, "empty version")
    epoch = 0
    if ":" in v:
        e, v = v.split(":", 1)
        if not e.isdigit():
            raise UnparseableVersion(NAME, version, "epoch is not a number")
        epoch = int(e)
    upstream, _, revision = v.rpartition("-") if "-" in v else (v, "", "")
    if not upstream:
        raise UnparseableVersion(NAME, version, "empty upstream version")
    if not upstream[0].isdigit():
        raise UnparseableVersion(NAME, version, "upstream version must start with a digit")
    if not _UPSTREAM_OK.match(upstream) or not _REVISION_OK.match(revision):
        raise UnparseableVersion(NAME, version, "invalid character")
    return epoch, upstream, revision


def _encode(part: str) -> tuple[int, ...]:
    out: list[int] = []
    for m in _RUNS.finditer(part):
        alpha, digits = m.group(1), m.group(2)
        if not alpha and not digits and out:
            continue
        out.extend(_weight(c) for c in alpha)
        out.append(0)
        out.append(int(digits) if digits else 0)
    out.append(0)
    return tuple(out)


def key(version: str) -> Key:
    """Sort key for a dpkg version."""
    epoch, upstream, revision = split(version)
    return epoch, _encode(upstream), _encode(revision)


def _verrevcmp(a: str, b: str) -> int:
    """Literal port of dpkg's verrevcmp (Debian Policy 5.6.12)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _order(c: str) -> int:
    if c.isdigit():
        return 0
    return _weight(c)


def compare(a: str, b: str) -> int:
    """Compare two dpkg versions with the policy algorithm (-1, 0, 1)."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return cmp(ea, eb)
    r = _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
    return cmp(r, 0)

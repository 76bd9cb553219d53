"""RPM version ordering (``rpmvercmp`` plus epoch/version/release).

Written by hand so that a version becomes a plain tuple key (the small PyPI ports
of rpmvercmp compare pairwise only). rpmvercmp splits a string into alphanumeric
segments, ignoring other separators; a numeric segment is newer than an alphabetic
one; ``~`` sorts before everything (even the end of the string) and ``^`` sorts
after the end of the string but before any further segment.

Key elements, in order: ``~`` (0) < end of string (1) < ``^`` (2) < alphabetic
segment (3, text) < numeric segment (4, number).
"""

from __future__ import annotations

import re

from ._base import UnparseableVersion

NAME = "rpm"

_SEGMENTS = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")
_TILDE, _END, _CARET, _ALPHA, _NUM = 0, 1, 2, 3, 4

Seg = tuple[int, int | str]
Key = tuple[int, tuple[Seg, ...], tuple[Seg, ...]]


def vercmp_key(s: str) -> tuple[Seg, ...]:
    """Key of one version or release string under rpmvercmp."""
    out: list[Seg] = []
    for tok in _SEGMENTS.findall(s):
        if tok == "~":
            out.append((_TILDE, 0))
        elif tok == "^":
            out.append((_CARET, 0))
        elif tok.isdigit():
            out.append((_NUM, int(tok)))
        else:
            out.append((_ALPHA, tok))
    out.append((_END, 0))
    return tuple(out)


def split(evr: str) -> tuple[int, str, str | None]:
    """Split ``[epoch:]version[-release]``."""
    s = evr.strip()
    if not s:
        raise UnparseableVersion(NAME, evr, "empty version")
    epoch = 0
    if ":" in s:
        e, s = s.split(":", 1)
        if not e.isdigit():
            raise UnparseableVersion(NAME, evr, "epoch is not a number")
        epoch = int(e)
    version, sep, release = s.rpartition("-")
    if not sep:
        version, release_opt = s, None
    else:
        release_opt = release
    if not version or not _SEGMENTS.search(version):
        raise UnparseableVersion(NAME, evr, "no version segments")
    return epoch, version, release_opt


def key(evr: str) -> Key:
    """Sort key for ``[epoch:]version[-release]``; a missing release sorts as empty."""
    epoch, version, release = split(evr)
    return epoch, vercmp_key(version), vercmp_key(release or "")


def compare(a: str, b: str) -> int:
    """Compare two RPM EVR strings (-1, 0, 1)."""
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)

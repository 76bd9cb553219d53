"""Alpine (apk-tools) version ordering.

Written by hand: no maintained Python package implements apk-tools' order. This
follows apk-tools' ``version.c`` (apk v2.14/v3 token grammar
``digit{.digit}...{letter}{_suffix{#}}...{~hash}{-r#}``): pre-release suffixes
(``_alpha`` < ``_beta`` < ``_pre`` < ``_rc``) sort before the bare version, post
suffixes (``_cvs`` < ``_svn`` < ``_git`` < ``_hg`` < ``_p``) after it, and a digit
group with a leading zero compares as a string (Gentoo rule).

apk's order is defined pairwise on token streams, so the key is the parsed token
tuple wrapped with ``functools.cmp_to_key`` (parsed once, compared cheaply).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ._base import UnparseableVersion, cmp

NAME = "apk"

# Token kinds, in apk-tools' enum order (the order matters for the tail rule).
INITIAL_DIGIT, DIGIT, LETTER, SUFFIX, SUFFIX_NO, COMMIT_HASH, REVISION_NO, END = range(8)

_SUFFIXES = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10}
_SUFFIX_NONE = 5
_DIGITS = re.compile(r"[0-9]+")
_LOWER = re.compile(r"[a-z]*")
_HEX = re.compile(r"[0-9a-fA-F]*")

Token = tuple[int, str, int]  # (kind, text, number or suffix value)


def tokens(version: str) -> tuple[Token, ...]:
    """Tokenise an apk version (raises UnparseableVersion on anything apk rejects)."""
    s = version.strip()
    m = _DIGITS.match(s)
    if not m:
        raise UnparseableVersion(NAME, version, "must start with a digit")
    out: list[Token] = [(INITIAL_DIGIT, m.group(), int(m.group()))]
    pos = m.end()
    kind = INITIAL_DIGIT
    while pos < len(s):
        c = s[pos]
        if "a" <= c <= "z":
            if kind > DIGIT:
                raise UnparseableVersion(NAME, version, f"unexpected letter at {pos}")
            kind = LETTER
            out.append((LETTER, c, ord(c)))
            pos += 1
        elif c == "." or c.isdigit():
            if c == ".":
                if kind > DIGIT:
                    raise UnparseableVersion(NAME, version, f"unexpected '.' at {pos}")
                pos += 1
            if kind in (INITIAL_DIGIT, DIGIT):
                kind = DIGIT
            elif kind == SUFFIX:
                kind = SUFFIX_NO
            else:
                raise UnparseableVersion(NAME, version, f"unexpected digit at {pos}")
            m = _DIGITS.match(s, pos)
            if not m:
                raise UnparseableVersion(NAME, version, f"missing digits at {pos}")
            out.append((kind, m.group(), int(m.group())))
            pos = m.end()
        elif c == "_":
            if kind > SUFFIX_NO:
                raise UnparseableVersion(NAME, version, f"unexpected suffix at {pos}")
            m = _LOWER.match(s, pos + 1)
            assert m is not None
            value = _SUFFIXES.get(m.group())
            if value is None:
                raise UnparseableVersion(NAME, version, f"unknown suffix {m.group()!r}")
            kind = SUFFIX
            out.append((SUFFIX, m.group(), value))
            pos = m.end()
        elif c == "~":
            if kind >= COMMIT_HASH:
                raise UnparseableVersion(NAME, version, f"unexpected '~' at {pos}")
            m = _HEX.match(s, pos + 1)
            assert m is not None
            if not m.group():
                raise UnparseableVersion(NAME, version, "empty commit hash")
            kind = COMMIT_HASH
            out.append((COMMIT_HASH, m.group(), 0))
            pos = m.end()
        elif c == "-":
            if kind >= REVISION_NO or not s.startswith("-r", pos):
                raise UnparseableVersion(NAME, version, f"unexpected '-' at {pos}")
            m = _DIGITS.match(s, pos + 2)
            if not m:
                raise UnparseableVersion(NAME, version, "revision without number")
            kind = REVISION_NO
            out.append((REVISION_NO, m.group(), int(m.group())))
            pos = m.end()
        else:
            raise UnparseableVersion(NAME, version, f"invalid character {c!r}")
    return tuple(out)


def _token_cmp(a: Token, b: Token) -> int:
    kind = a[0]
    if kind == DIGIT and (a[1][0] == "0" or b[1][0] == "0"):
        return cmp(a[1], b[1])  # leading zero: raw string order
    if kind in (INITIAL_DIGIT, DIGIT, SUFFIX_NO, REVISION_NO, LETTER, SUFFIX):
        return cmp(a[2], b[2])
    return cmp(a[1], b[1])


def compare_tokens(ta: tuple[Token, ...], tb: tuple[Token, ...]) -> int:
    """apk_version_compare on already tokenised versions."""
    n = min(len(ta), len(tb))
    for i in range(n):
        if ta[i][0] != tb[i][0]:
            return _tail(ta[i], tb[i])
        r = _token_cmp(ta[i], tb[i])
        if r:
            return r
    a_next: Token = ta[n] if len(ta) > n else (END, "", 0)
    b_next: Token = tb[n] if len(tb) > n else (END, "", 0)
    if a_next[0] == b_next[0]:
        return 0
    return _tail(a_next, b_next)


def _tail(a: Token, b: Token) -> int:
    # Equal so far; the longer version is newer unless it continues with a pre-release suffix.
    if a[0] == SUFFIX and a[2] < _SUFFIX_NONE:
        return -1
    if b[0] == SUFFIX and b[2] < _SUFFIX_NONE:
        return 1
    return cmp(b[0], a[0])


_Key = functools.cmp_to_key(compare_tokens)


def key(version: str) -> Any:
    """Sort key for an apk version."""
    return _Key(tokens(version))


def compare(a: str, b: str) -> int:
    """Compare two apk versions (-1, 0, 1)."""
    return compare_tokens(tokens(a), tokens(b))

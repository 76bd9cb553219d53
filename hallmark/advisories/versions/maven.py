"""Maven version ordering (``ComparableVersion``, as specified in the POM reference).

Written by hand: no maintained Python package implements Maven's ordering. This is
the classic ``ComparableVersion`` algorithm (the "Version Order Specification" of
the POM reference, also what OSV.dev uses): tokens split on ``.``, ``-`` and
digit/letter transitions, a ``-`` or a transition opens a nested list, trailing
"null" items (``0``, ``""``, ``final``, ``ga``, ``release``, empty lists) are
dropped, and qualifiers order as alpha < beta < milestone < rc = cr < snapshot <
release < sp < anything else (alphabetically). Maven 3.9's extra "combination
item" rules are not modelled.

The order is defined pairwise on item trees, so the key wraps the parsed tree with
``functools.cmp_to_key``.
"""

from __future__ import annotations

import functools
from typing import Any

from ._base import UnparseableVersion, cmp

NAME = "maven"

_QUALIFIERS = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"]
_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc"}
_RELEASE_INDEX = str(_QUALIFIERS.index(""))

# Items: ("i", int) | ("s", comparable-qualifier str) | ("l", list of items)
Item = tuple[str, Any]


def _qualifier(value: str, followed_by_digit: bool) -> str:
    if followed_by_digit and len(value) == 1:
        value = {"a": "alpha", "b": "beta", "m": "milestone"}.get(value, value)
    value = _ALIASES.get(value, value)
    if value in _QUALIFIERS:
        return str(_QUALIFIERS.index(value))
    return f"{len(_QUALIFIERS)}-{value}"


def _parse_item(is_digit: bool, buf: str) -> Item:
    return ("i", int(buf)) if is_digit else ("s", _qualifier(buf, False))


def _is_null(item: Item) -> bool:
    kind, value = item
    if kind == "i":
        return bool(value == 0)
    if kind == "s":
        return bool(value == _RELEASE_INDEX)
    return not value


def _normalize(items: list[Item]) -> None:
    for i in range(len(items) - 1, -1, -1):
        if _is_null(items[i]):
            del items[i]
        elif items[i][0] != "l":
            break


def parse(version: str) -> Item:
    """Parse into ComparableVersion's item tree (a list item)."""
    v = version.strip().lower()
    if not v:
        raise UnparseableVersion(NAME, version, "empty version")
    root: list[Item] = []
    current = root
    stack = [root]
    is_digit = False
    start = 0
    for i, c in enumerate(v):
        if c == ".":
            current.append(("i", 0) if i == start else _parse_item(is_digit, v[start:i]))
            start = i + 1
        elif c == "-":
            current.append(("i", 0) if i == start else _parse_item(is_digit, v[start:i]))
            start = i + 1
            new: list[Item] = []
            current.append(("l", new))
            current = new
            stack.append(new)
        elif c.isdigit() and c.isascii():
            if not is_digit and i > start:
                current.append(("s", _qualifier(v[start:i], True)))
                start = i
                new = []
                current.append(("l", new))
                current = new
                stack.append(new)
            is_digit = True
        else:
            if is_digit and i > start:
                current.append(_parse_item(True, v[start:i]))
                start = i
                new = []
                current.append(("l", new))
                current = new
                stack.append(new)
            is_digit = False
    if len(v) > start:
        current.append(_parse_item(is_digit, v[start:]))
    while stack:
        _normalize(stack.pop())
    return ("l", root)


def _cmp_item(a: Item | None, b: Item | None) -> int:
    """Item.compareTo(b) for a non-null ``a``; ``b`` may be None (padding)."""
    assert a is not None
    kind, value = a
    if kind == "i":
        if b is None:
            return 0 if value == 0 else 1
        return cmp(value, b[1]) if b[0] == "i" else 1
    if kind == "s":
        if b is None:
            return cmp(value, _RELEASE_INDEX)
        if b[0] == "i":
            return -1
        if b[0] == "s":
            return cmp(value, b[1])
        return -1
    # list
    if b is None:
        return 0 if not value else _cmp_item(value[0], None)
    if b[0] == "i":
        return -1
    if b[0] == "s":
        return 1
    left, right = value, b[1]
    for i in range(max(len(left), len(right))):
        lhs = left[i] if i < len(left) else None
        rhs = right[i] if i < len(right) else None
        if lhs is None:
            r = 0 if rhs is None else -_cmp_item(rhs, None)
        else:
            r = _cmp_item(lhs, rhs)
        if r:
            return r
    return 0


def compare_items(a: Item, b: Item) -> int:
    """Compare two parsed versions (-1, 0, 1)."""
    return cmp(_cmp_item(a, b), 0)


_Key = functools.cmp_to_key(compare_items)


def key(version: str) -> Any:
    """Sort key for a Maven version."""
    return _Key(parse(version))


def compare(a: str, b: str) -> int:
    """Compare two Maven versions (-1, 0, 1)."""
    return compare_items(parse(a), parse(b))

"""PEP 440 ordering (PyPI), delegated to ``packaging.version``."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from ._base import UnparseableVersion, cmp

NAME = "pep440"


def key(version: str) -> Version:
    """Parsed ``packaging`` Version; its own ordering is the PEP 440 order."""
    try:
        return Version(version)
    except InvalidVersion as exc:
        raise UnparseableVersion(NAME, version, "not a PEP 440 version") from exc


def compare(a: str, b: str) -> int:
    """Compare two PEP 440 versions (-1, 0, 1)."""
    return cmp(key(a), key(b))

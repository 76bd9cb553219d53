"""Common pieces of the version schemes: the error type and the scheme record.

Every scheme turns a version string into a *sort key* once (``key``), so that
bulk matching compares precomputed keys with plain ``<`` instead of re-parsing
strings on every comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class UnparseableVersion(ValueError):
    """A version string that a scheme cannot order; callers must not treat it as safe."""

    def __init__(self, scheme: str, version: str, reason: str) -> None:
        super().__init__(f"cannot parse {version!r} as a {scheme} version: {reason}")
        self.scheme = scheme
        self.version = version
        self.reason = reason


def cmp(a: Any, b: Any) -> int:
    """Three-way comparison of two keys (-1, 0, 1)."""
    return (a > b) - (a < b)


@dataclass(frozen=True)
class VersionScheme:
    """A version ordering: ``key`` maps a version string to a totally ordered key."""

    name: str
    key: Callable[[str], Any]

    def compare(self, a: str, b: str) -> int:
        """Compare two version strings: negative, zero or positive like ``cmp``."""
        return cmp(self.key(a), self.key(b))

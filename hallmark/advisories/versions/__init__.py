"""Version schemes per ecosystem and the OSV-ecosystem -> scheme registry.

Each scheme module exposes ``key(version)`` (a sort key, computed once so bulk
matching only compares keys) and ``compare(a, b) -> int``; both raise
:class:`UnparseableVersion` for a string the scheme cannot order.
"""

from __future__ import annotations

from . import apk, dpkg, maven, pep440, rpm, rubygems, semver
from ._base import UnparseableVersion, VersionScheme, cmp

SCHEMES: dict[str, VersionScheme] = {
    m.NAME: VersionScheme(m.NAME, m.key) for m in (apk, dpkg, maven, pep440, rpm, rubygems, semver)
}

# OSV ecosystem (the part before the first ':') -> scheme name.
_ECOSYSTEM_SCHEMES: dict[str, str] = {
    "PyPI": "pep440",
    "npm": "semver",
    "crates.io": "semver",
    "Go": "semver",
    "Hex": "semver",
    "Pub": "semver",
    "SwiftURL": "semver",
    "Bitnami": "semver",
    "Maven": "maven",
    "RubyGems": "rubygems",
    "Debian": "dpkg",
    "Ubuntu": "dpkg",
    "Alpine": "apk",
    "Wolfi": "apk",
    "Chainguard": "apk",
    "MinimOS": "apk",
    "Red Hat": "rpm",
    "Rocky Linux": "rpm",
    "AlmaLinux": "rpm",
    "openSUSE": "rpm",
    "SUSE": "rpm",
    "Mageia": "rpm",
    "Photon OS": "rpm",
    "openEuler": "rpm",
    "Azure Linux": "rpm",
}


def ecosystem_base(ecosystem: str) -> str:
    """``Debian:11`` -> ``Debian``; ``Alpine:v3.19`` -> ``Alpine``."""
    return ecosystem.split(":", 1)[0]


def scheme_for_ecosystem(ecosystem: str) -> VersionScheme | None:
    """The version scheme of an OSV ecosystem string, or None when Hallmark has none.

    Packagist, NuGet and others without a faithful implementation here return None
    so that callers report "cannot compare" instead of guessing an order.
    """
    name = _ECOSYSTEM_SCHEMES.get(ecosystem_base(ecosystem))
    return SCHEMES[name] if name else None


def scheme(name: str) -> VersionScheme:
    """A scheme by name (``dpkg``, ``apk``, ``rpm``, ``pep440``, ``semver``, ``maven``, ``rubygems``)."""
    return SCHEMES[name]


__all__ = [
    "SCHEMES",
    "UnparseableVersion",
    "VersionScheme",
    "cmp",
    "ecosystem_base",
    "scheme",
    "scheme_for_ecosystem",
]

"""Semantic Versioning 2.0.0 precedence (npm, crates.io, Go, and OSV ``SEMVER`` ranges).

Written by hand to produce a plain tuple key; the ``semver`` package compares
objects pairwise. Rules (semver.org section 11): numeric major.minor.patch; a
pre-release sorts before the release; pre-release identifiers compare numerically
when numeric, in ASCII order otherwise, numeric before alphanumeric, and a shorter
list of equal identifiers first. Build metadata (``+...``) is ignored.

Tolerated on input, because real data has it: a leading ``v`` (Go module tags,
``go`` for Go toolchains is handled by :func:`go_toolchain_to_semver`).
"""

from __future__ import annotations

import re

from ._base import UnparseableVersion, cmp

NAME = "semver"

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_RELEASE: tuple[int] = (1,)

PreId = tuple[int, int, str]
Key = tuple[int, int, int, tuple[int] | tuple[int, tuple[PreId, ...]]]


def key(version: str) -> Key:
    """Sort key for a SemVer 2.0.0 version (optional ``v`` prefix)."""
    m = _SEMVER.match(version.strip())
    if not m:
        raise UnparseableVersion(NAME, version, "not a SemVer 2.0.0 version")
    major, minor, patch, pre = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    if pre is None:
        return major, minor, patch, _RELEASE
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return major, minor, patch, (0, ids)


def compare(a: str, b: str) -> int:
    """Compare two SemVer versions (-1, 0, 1)."""
    return cmp(key(a), key(b))


_GO_TOOLCHAIN = re.compile(r"^(?:go)?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(beta|rc)(\d+))?$")


def go_toolchain_to_semver(version: str) -> str:
    """Turn a Go toolchain version (``go1.21.3``, ``go1.21rc2``) into the SemVer the Go vulndb uses.

    Mirrors golang.org/x/vuln's conversion: ``go1.21`` -> ``1.21.0``,
    ``go1.21rc2`` -> ``1.21.0-rc.2``, ``go1.19beta1`` -> ``1.19.0-beta.1``.
    """
    m = _GO_TOOLCHAIN.match(version.strip())
    if not m:
        raise UnparseableVersion("go toolchain", version, "not a Go release version")
    major, minor, patch, pre, pre_n = m.groups()
    out = f"{major}.{minor or 0}.{patch or 0}"
    if pre:
        out += f"-{pre}.{pre_n}"
    return out

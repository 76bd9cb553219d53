"""The detector contract. A detector reads one file and reports packages (and/or the distro).

Detectors see one file at a time and nothing else, so their results depend only on that
file's bytes: that is what makes per-layer caching sound. Layer order, whiteouts, symlinks
and "which layer introduced it" are the engine's job (:mod:`hallmark.index.engine`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import ClassVar

from hallmark.model import Distro, Package


@dataclass
class Detection:
    """What one file told a detector. ``priority`` orders distro sources (lower wins)."""

    packages: list[Package] = field(default_factory=list)
    distro: Distro | None = None
    priority: int = 100
    warnings: list[str] = field(default_factory=list)


class Detector:
    """Base class: subclasses set ``name`` and ``patterns`` and/or ``magic``, and implement ``detect``.

    ``patterns`` are globs on the image path without a leading slash, where ``*`` also crosses
    ``/`` (so ``*/node_modules/*/package.json`` matches at any depth). ``magic`` selects
    executable files by their first bytes instead (binaries can live anywhere). Package paths
    a detector returns are relative to the file it was given: ``""`` means the file itself and
    ``":inner.jar"`` something inside it; the engine prefixes the final image path.
    """

    name: ClassVar[str] = ""
    patterns: ClassVar[tuple[str, ...]] = ()
    magic: ClassVar[tuple[bytes, ...]] = ()

    def __init__(self) -> None:
        self._re = re.compile("|".join(fnmatch.translate(p) for p in self.patterns)) if self.patterns else None

    def wants(self, path: str) -> bool:
        return self._re is not None and self._re.match(path) is not None

    def detect(self, path: str, data: bytes) -> Detection | None:
        raise NotImplementedError

    def finalize(self, pkg: Package, distro: Distro | None) -> None:
        """Adjust a surviving package once the image's distro is known (OS purls need it)."""


def pep503(name: str) -> str:
    """PEP 503 normalised name (what PyPI and OSV use)."""
    return re.sub(r"[-_.]+", "-", name).lower()

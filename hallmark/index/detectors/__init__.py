"""Package detectors, one sub-package per ecosystem; adding an ecosystem is adding a folder.

Each sub-package exports ``DETECTORS``: a list of :class:`hallmark.index.detect.Detector`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from hallmark.index.detect import Detector


@cache
def all_detectors() -> tuple[Detector, ...]:
    """Discover every detector folder once per process."""
    found: list[Detector] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        found.extend(getattr(module, "DETECTORS", ()))
    return tuple(found)

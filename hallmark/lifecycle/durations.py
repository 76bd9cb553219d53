"""Durations as Quay writes them in ``quay.expires-after`` labels: ``90s``, ``30m``, ``12h``, ``2d``, ``3w``.

One number and one unit, nothing else (no ``1h30m``, no fractions): a label is typed by hand
into a Dockerfile, and a value that could be read two ways is refused rather than guessed.
Settings take the same form (or plain seconds as an integer).
"""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RE = re.compile(r"^([0-9]{1,9})([smhdw])$")
MAX_SECONDS = 100 * 365 * 86400  # a century: larger values are typos, not policies


def parse_duration(text: str) -> int:
    """Seconds in ``text`` (``2d`` -> 172800); ValueError with a readable message otherwise."""
    m = _RE.match(text.strip())
    if not m:
        raise ValueError(f"{text[:40]!r} is not a duration like 90s, 30m, 12h, 2d or 3w")
    seconds = int(m.group(1)) * UNITS[m.group(2)]
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than 100 years")
    return seconds


def format_duration(seconds: int) -> str:
    """The largest exact unit: 172800 -> ``2d``, 90 -> ``90s``."""
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"

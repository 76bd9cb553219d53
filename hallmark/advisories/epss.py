"""FIRST EPSS scores (``epss_scores-current.csv.gz``): CVE -> probability of exploitation in 30 days.

The file is a gzip CSV with a ``#model_version...`` comment line, then ``cve,epss,percentile``.
Rows that do not parse are skipped; EPSS is advisory context, never a reason to hide a finding.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

EPSS_URL = "https://epss.cyentia.com/epss_scores-current.csv.gz"


def parse_epss(data: bytes) -> dict[str, float]:
    text = gzip.decompress(data).decode("utf-8", "replace") if data[:2] == b"\x1f\x8b" else data.decode()
    scores: dict[str, float] = {}
    rows = csv.reader(line for line in io.StringIO(text) if not line.startswith("#"))
    for row in rows:
        if len(row) < 2 or not row[0].startswith("CVE-"):
            continue
        try:
            value = float(row[1])
        except ValueError:
            continue
        if 0.0 <= value <= 1.0:
            scores[row[0]] = value
    return scores


def load_epss(path: str | Path) -> dict[str, float]:
    return parse_epss(Path(path).read_bytes())

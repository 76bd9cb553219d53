"""EPSS scores join findings when the set carries them; bad rows are skipped."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

from hallmark.advisories.epss import parse_epss
from hallmark.advisories.index import load_snapshot
from hallmark.advisories.matcher import match_inventory
from hallmark.model import Package

RECORD = {
    "id": "PYSEC-TEST-1",
    "modified": "2024-01-01T00:00:00Z",
    "aliases": ["CVE-2099-0001"],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "demo"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}],
        }
    ],
}


def test_parse_epss_skips_comments_and_bad_rows() -> None:
    csv = (
        b"#model_version:v2025.03.14,score_date:2026-11-24\ncve,epss,percentile\n"
        b"CVE-2099-0001,0.91234,0.999\nCVE-2099-0002,not-a-number,0.1\nCVE-2099-0003,1.5,0.9\n"
    )
    scores = parse_epss(gzip.compress(csv))
    assert scores == {"CVE-2099-0001": 0.91234}


def test_findings_carry_epss(tmp_path: Path) -> None:
    (tmp_path / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "osv" / "PyPI" / "all.zip", "w") as zf:
        zf.writestr("PYSEC-TEST-1.json", json.dumps(RECORD))
    (tmp_path / "epss").mkdir()
    (tmp_path / "epss" / "epss_scores-current.csv.gz").write_bytes(
        gzip.compress(b"cve,epss,percentile\nCVE-2099-0001,0.42,0.97\n")
    )
    idx = load_snapshot(tmp_path)
    res = match_inventory(idx, [Package("demo", "1.0", "PyPI"), Package("demo", "2.0", "PyPI")])
    assert [(f.advisory_id, f.installed_version, f.epss) for f in res.findings] == [("PYSEC-TEST-1", "1.0", 0.42)]
    (tmp_path / "epss" / "epss_scores-current.csv.gz").unlink()
    res = match_inventory(load_snapshot(tmp_path), [Package("demo", "1.0", "PyPI")])
    assert res.findings[0].epss is None

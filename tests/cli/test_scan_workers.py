"""``hallmark scan`` checks the files of new layers in worker processes: the report and the
per-layer cache entries are the same as with every file checked in the scanning process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import hallmark.content.parallel
from hallmark.cli import app
from tests.cli.test_scan_content_cache import BASE, CONFIG, TOP, make_rules, runner, write_oci


def _scan(ref: str, rules: str, cache: Path, workers: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(hallmark.content.parallel, "default_workers", lambda: workers)
    res = runner.invoke(app, ["scan", ref, "--scanners", "malware,secret,config", "--rules", rules, "-f", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    report.pop("generated_at")
    return report


def test_workers_give_the_same_report_and_cache_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = write_oci(tmp_path / "img", [BASE, TOP], CONFIG)
    rules = make_rules(tmp_path / "rules")
    alone = _scan(ref, rules, tmp_path / "alone", 0, monkeypatch)
    pooled = _scan(ref, rules, tmp_path / "pooled", 2, monkeypatch)
    assert pooled == alone
    kinds = {(f["kind"], f["rule_id"]) for f in pooled["content_findings"]}
    assert {("malware", "Cache_Test_Marker"), ("secret", "hallmark-cache-test-token")} <= kinds

    def entries(cache: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (cache / "hallmark" / "content").rglob("*.json")}

    assert entries(tmp_path / "pooled") == entries(tmp_path / "alone")
    assert len(entries(tmp_path / "alone")) == 2

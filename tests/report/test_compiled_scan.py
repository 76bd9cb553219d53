"""``hallmark scan`` reads the compiled advisory set written by ``db update`` (never the whole set),
and reports the same findings as a scan of the same feeds loaded in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import hallmark.advisories.index
import hallmark.pipeline.advisory_sets
from hallmark.advisories.compiled import FILE_NAME
from hallmark.cli import app
from tests.index.imagebuilder import Image
from tests.report.conftest import RECORD, layout

runner = CliRunner()


def _findings(output: str) -> list[dict[str, Any]]:
    return list(json.loads(output)["findings"])


def test_scan_uses_the_set_compiled_at_update(
    tmp_path: Path, db_dir: Path, bullseye_image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALLMARK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HALLMARK_DATABASE_URL", raising=False)
    res = runner.invoke(app, ["db", "update", "--mirror", str(db_dir)])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "data" / "advisories").glob(f"*/{FILE_NAME}"))) == 1
    ref = layout(tmp_path / "img", bullseye_image)

    # the in-memory way, for comparison: the same feeds given with --db (first use loads them)
    res = runner.invoke(app, ["scan", ref, "--db", str(db_dir), "--format", "json", "--scanners", "vuln"])
    assert res.exit_code == 0, res.output
    in_memory = _findings(res.stdout)
    assert {f["advisory_id"] for f in in_memory} == {RECORD, "DSA-9999-1"}

    def whole_set(*args: object) -> None:
        raise AssertionError("a scan must not load the whole advisory set")

    monkeypatch.setattr(hallmark.advisories.index, "load_snapshot", whole_set)
    monkeypatch.setattr(hallmark.pipeline.advisory_sets, "load_snapshot", whole_set)
    res = runner.invoke(app, ["scan", ref, "--format", "json", "--scanners", "vuln"])
    assert res.exit_code == 0, res.output
    assert _findings(res.stdout) == in_memory
    res = runner.invoke(app, ["scan", ref, "--db", str(db_dir), "--format", "json", "--scanners", "vuln"])
    assert res.exit_code == 0, res.output  # --db: the copy compiled on first use
    assert _findings(res.stdout) == in_memory

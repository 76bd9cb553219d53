"""``hallmark scan`` end to end on OCI layouts built here, with ``--db`` on the tiny fixture folder."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from typer.testing import CliRunner

from hallmark.cli import app
from tests.index.imagebuilder import Image, build_image
from tests.report.conftest import RECORD, SHARED, debian_layer, layout
from tests.report.schemas import openvex_errors, sarif_errors

runner = CliRunner()


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory, bullseye_image: Image, bookworm_image: Image) -> dict[str, str]:
    root = tmp_path_factory.mktemp("layouts")
    return {"11": layout(root / "b11", bullseye_image), "12": layout(root / "b12", bookworm_image)}


def scan(*args: str) -> Any:
    return runner.invoke(app, ["scan", *args])


def test_findings_and_fail_on(refs: dict[str, str], db_dir: Path) -> None:
    res = scan(refs["11"], "--db", str(db_dir), "--format", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    ids = {f["advisory_id"] for f in report["findings"]}
    assert ids == {RECORD, "DSA-9999-1"}
    assert report["complete"] is True and report["advisory_set"]["source"] == str(db_dir)
    assert report["image"]["digest"].startswith("sha256:")
    assert scan(refs["11"], "--db", str(db_dir), "--format", "json", "--fail-on", "high").exit_code == 1
    assert scan(refs["11"], "--db", str(db_dir), "--format", "json", "--fail-on", "critical").exit_code == 0
    assert scan(refs["11"], "--db", str(db_dir), "--fail-on", "low").exit_code == 1


def test_vex_suppression_clears_the_gate(refs: dict[str, str], db_dir: Path, tmp_path: Path) -> None:
    vex = tmp_path / "triage.openvex.json"
    vex.write_text(
        json.dumps(
            {
                "@context": "https://openvex.dev/ns/v0.2.0",
                "@id": "https://example.test/vex/ci",
                "author": "bob@example.test",
                "timestamp": "2026-01-01T00:00:00Z",
                "version": 1,
                "statements": [
                    {
                        "vulnerability": {"name": "CVE-2025-64458"},
                        "products": [{"@id": "pkg:pypi/django"}],
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path",
                    }
                ],
            }
        )
    )
    out = tmp_path / "r.json"
    args = ("--db", str(db_dir), "--vex", str(vex), "--scanners", "vuln", "--fail-on", "high", "-f", "json")
    res = scan(refs["11"], *args, "-o", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    f = next(x for x in report["findings"] if x["advisory_id"] == RECORD)
    assert f["suppressed"]["by"] == "bob@example.test"
    assert report["summary"]["suppressed"] == 1 and report["summary"]["by_severity"]["high"] == 0
    table = scan(refs["11"], "--db", str(db_dir), "--vex", str(vex))
    assert "suppressed: not_affected by bob@example.test" in table.stdout


def test_formats_to_files(refs: dict[str, str], db_dir: Path, tmp_path: Path) -> None:
    for fmt in ("sarif", "cyclonedx", "openvex"):
        out = tmp_path / f"r.{fmt}"
        res = scan(refs["11"], "--db", str(db_dir), "--format", fmt, "--output", str(out))
        assert res.exit_code == 0, res.output
        text = out.read_text()
        if fmt == "sarif":
            assert sarif_errors(json.loads(text)) == []
        elif fmt == "cyclonedx":
            assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
        else:
            assert openvex_errors(json.loads(text)) == []


def test_release_without_data_is_not_clean(refs: dict[str, str], db_dir: Path) -> None:
    res = scan(refs["12"], "--db", str(db_dir), "--format", "json")
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert report["unsupported_releases"] == ["Debian:12"] and report["complete"] is False
    assert any("Debian:12" in n for n in report["notes"])
    assert "no advisory data for Debian:12" in res.stderr
    assert {f["advisory_id"] for f in report["findings"]} == {RECORD}  # PyPI still matched
    # the PyPI finding crosses "high"; with "critical" nothing does, but the OS part is unknown
    assert scan(refs["12"], "--db", str(db_dir), "--fail-on", "high").exit_code == 1
    res = scan(refs["12"], "--db", str(db_dir), "--fail-on", "critical")
    assert res.exit_code == 3 and "NOT known to be clean" in res.stderr
    assert scan(refs["12"], "--db", str(db_dir), "--fail-on", "critical", "--allow-incomplete").exit_code == 0
    table = scan(refs["12"], "--db", str(db_dir))
    assert "WARNING: no advisory data for Debian:12" in table.stdout


def test_no_advisory_data_at_all(refs: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "empty-data"
    res = scan(refs["11"], "--data-dir", str(data), "--format", "json")
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert report["advisory_set"] is None and report["findings"] == [] and report["complete"] is False
    assert "NOT known to be clean" in res.stderr
    assert not data.exists()  # scanning does not create a data folder as a side effect
    assert scan(refs["11"], "--data-dir", str(data), "--scanners", "vuln", "--fail-on", "low").exit_code == 3
    # the image runs as root (a high configuration finding): that fails the run, with or without advisories
    assert scan(refs["11"], "--data-dir", str(data), "--fail-on", "low").exit_code == 1
    assert "NOT known to be clean" in scan(refs["11"], "--data-dir", str(data)).stdout


def test_usage_errors(refs: dict[str, str], db_dir: Path, tmp_path: Path) -> None:
    assert scan(refs["11"], "--scanners", "vuln,virus").exit_code == 2
    assert scan(refs["11"], "--db", str(tmp_path / "missing")).exit_code == 2
    assert scan(refs["11"], "--db", str(tmp_path)).exit_code == 2  # a folder without feeds
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert scan(refs["11"], "--db", str(db_dir), "--vex", str(bad)).exit_code == 2
    assert scan(f"oci:{tmp_path / 'nope'}:x", "--db", str(db_dir)).exit_code == 2
    assert scan(refs["11"], "--db", str(db_dir), "--fail-on", "severe").exit_code == 2


@pytest.fixture(scope="module")
def dirty_ref(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = random.Random(4)
    key_id = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
    eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
    layer = debian_layer("11", {"app/settings.py": f'AWS_ACCESS_KEY_ID = "{key_id}"\n', "tmp/eicar.com": eicar})
    img = build_image([(layer.tar_bytes(), "gzip")])
    return layout(tmp_path_factory.mktemp("dirty"), img)


def test_content_scanners(dirty_ref: str, db_dir: Path) -> None:
    if not (SHARED / "secrets" / "gitleaks" / "gitleaks.toml").is_file():
        pytest.skip("shared rule data not found")
    args = [dirty_ref, "--db", str(db_dir), "--rules", str(SHARED), "--format", "json"]
    res = scan(*args, "--scanners", "vuln,secret,malware,config")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    kinds = {(c["kind"], c["rule_id"]) for c in report["content_findings"]}
    assert ("secret", "aws-access-token") in kinds
    assert any(k == "malware" and "EICAR" in r.upper() for k, r in kinds)
    secret = next(c for c in report["content_findings"] if c["rule_id"] == "aws-access-token")
    assert secret["path"] == "/app/settings.py" and secret["status"] == "present"
    assert "AKIA" not in json.dumps(secret).replace("AKIA*", "")  # never the secret itself
    assert report["summary"]["content"]["by_kind"]["secret"] >= 1
    assert report["content_scan"]["rules"] == str(SHARED)
    assert {f["advisory_id"] for f in report["findings"]} == {RECORD, "DSA-9999-1"}
    assert sarif_errors(json.loads(scan(*args[:-1], "sarif", "--scanners", "secret").stdout)) == []
    # secrets only: no vulnerability matching, content findings still gate the build
    res = scan(dirty_ref, "--rules", str(SHARED), "--scanners", "secret", "--fail-on", "high", "-f", "json")
    assert res.exit_code == 1, res.output
    only = json.loads(res.stdout)
    assert only["findings"] == [] and {c["kind"] for c in only["content_findings"]} == {"secret"}

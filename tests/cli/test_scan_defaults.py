"""``hallmark scan`` as a security product's user expects it: every scanner by default,
``--fail-on`` counting secrets, malware and configuration findings, ``--fail-on-unknown`` for
findings without a severity, and a table that names a secret's variable, never its value."""

from __future__ import annotations

import json
import random
import re
import string
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hallmark.cli import app
from tests.index.imagebuilder import dist_info
from tests.ocihelp import OCI_MANIFEST, image, sha256, tar_layer

runner = CliRunner()
RECORD = {
    "id": "HMTEST-2026-0001",
    "modified": "2026-01-01T00:00:00Z",
    "published": "2026-01-01T00:00:00Z",
    "summary": "a test advisory that rates nothing",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "pathpkg"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.2"}]}],
        }
    ],
}
GOOD_CONFIG = {"User": "app", "Healthcheck": {"Test": ["CMD", "true"]}}


def fake_key(seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40))


def write_oci(root: Path, files: dict[str, bytes], config: dict[str, Any], history: list[Any] | None = None) -> str:
    """An OCI layout folder with one gzip layer and the given image config (User, Env, ...)."""
    layer = tar_layer(files)
    extra: dict[str, Any] = {"config": config}
    if history is not None:
        extra["history"] = history
    cfg, manifest = image([layer], extra)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (layer, cfg, manifest):
        (blobs / sha256(data)[7:]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return str(root)


PKG = {"usr/lib/python3/dist-packages/pathpkg-0.1.dist-info/METADATA": dist_info("pathpkg", "0.1").encode()}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("db")
    (root / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(root / "osv" / "PyPI" / "all.zip", "w") as z:
        z.writestr(f"{RECORD['id']}.json", json.dumps(RECORD))
    return str(root)


def scan(*args: str) -> Result:
    return runner.invoke(app, ["scan", *args])


def test_default_scanners_are_all_four(tmp_path: Path, db: str) -> None:
    ref = write_oci(tmp_path / "img", PKG, {})
    res = scan(ref, "--db", db, "-f", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["scanners"] == ["config", "malware", "secret", "vuln"]
    assert report["content_scan"]["scanners"] == ["config", "malware", "secret"]
    assert {f["advisory_id"] for f in report["findings"]} == {RECORD["id"]}
    assert "root-user" in {c["rule_id"] for c in report["content_findings"]}  # the config check ran
    only = json.loads(scan(ref, "--db", db, "--scanners", "vuln", "-f", "json").stdout)
    assert "content_findings" not in only and only["scanners"] == ["vuln"]


def test_fail_on_counts_a_secret(tmp_path: Path, db: str) -> None:
    files = {**PKG, "app/.env": f"aws_secret_access_key = {fake_key(1)}\n".encode()}
    ref = write_oci(tmp_path / "img", files, GOOD_CONFIG)
    res = scan(ref, "--db", db, "--fail-on", "high", "-f", "json")
    assert res.exit_code == 1, res.output
    assert "exposed secrets" in res.stderr
    secret = next(c for c in json.loads(res.stdout)["content_findings"] if c["kind"] == "secret")
    assert secret["path"] == "/app/.env"
    # the same image without the secret scanner passes the gate
    assert scan(ref, "--db", db, "--scanners", "vuln,config,malware", "--fail-on", "high").exit_code == 0


def test_fail_on_unknown(tmp_path: Path, db: str) -> None:
    ref = write_oci(tmp_path / "img", PKG, GOOD_CONFIG)
    res = scan(ref, "--db", db, "--scanners", "vuln", "-f", "json", "--fail-on", "low")
    assert res.exit_code == 0, res.output  # default: a finding without a severity does not fail the run
    assert [f["severity"] for f in json.loads(res.stdout)["findings"]] in (["unknown"], [None])
    res = scan(ref, "--db", db, "--scanners", "vuln", "--fail-on", "low", "--fail-on-unknown")
    assert res.exit_code == 1 and "1 unknown" in res.stderr
    assert scan(ref, "--db", db, "--scanners", "vuln", "--fail-on-unknown").exit_code == 1


def test_table_names_the_variable_not_the_value(tmp_path: Path, db: str) -> None:
    env_value, arg_value = fake_key(2), fake_key(3)
    config = {**GOOD_CONFIG, "Env": ["PATH=/usr/bin", f"AWS_SECRET_ACCESS_KEY={env_value}"]}
    history = [{"created_by": f"RUN |1 NPM_TOKEN={arg_value} /bin/sh -c npm ci # buildkit"}]
    ref = write_oci(tmp_path / "img", PKG, config, history)
    res = scan(ref, "--db", db)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert env_value not in out and arg_value not in out
    assert "ENV AWS_SECRET_ACCESS_KEY (config.Env[1])" in out
    assert "build arg NPM_TOKEN (history[0].created_by)" in out
    assert re.search(r"Advisory data: advisories of \d{4}-\d{2}-\d{2} \(osv:PyPI\)", out), out
    line = next(x for x in out.splitlines() if x.startswith("Content findings:"))
    assert "{" not in line and "secret: " in line and "config: " in line
    doc = json.loads(scan(ref, "--db", db, "-f", "json").stdout)
    secrets = [c for c in doc["content_findings"] if c["kind"] == "secret"]
    assert {c["extra"]["variable"] for c in secrets} == {"AWS_SECRET_ACCESS_KEY"}
    assert env_value not in json.dumps(doc) and arg_value not in json.dumps(doc)

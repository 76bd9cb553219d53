"""A rule update re-checks stored images, as an advisory update re-matches them: after
``db update --mirror`` brings a new secret rule, the image's stored content report and its
combined counts (what the portal and the approval gate read) show what ``hallmark scan`` finds."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from hallmark.app import Hallmark
from hallmark.cli import app
from hallmark.config import load_config
from hallmark.pipeline.content import recheck_all, stale_images
from tests.conftest import Server
from tests.ocihelp import OCI_MANIFEST, image, push_blob, push_manifest, sha256, tar_layer
from tests.pipeline.test_pipeline import hallmark_cli, wait_for

TOKEN = "hmtest_" + "q7w3e9r5t1y8u2i6o4p0a3s5"  # matched only by the rule the update brings
RULE = """title = "site rules"

[[rules]]
id = "hallmark-test-token"
description = "Test token of the rule-update test"
regex = '''(hmtest_[a-z0-9]{24})'''
keywords = ["hmtest_"]
"""
RECORD = {
    "id": "HMTEST-2026-0002",
    "modified": "2026-01-01T00:00:00Z",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "nothing-here"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
        }
    ],
}


def mirror(root: Path, rules: bool) -> Path:
    (root / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(root / "osv" / "PyPI" / "all.zip", "w") as z:
        z.writestr(f"{RECORD['id']}.json", json.dumps(RECORD))
    if rules:
        (root / "secrets").mkdir()
        (root / "secrets" / "site.toml").write_text(RULE)
    return root


def poll(fetch: Any, done: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} never happened: {last}")


def secrets_in(report: dict[str, Any]) -> list[str]:
    return sorted(f["rule_id"] for f in report["findings"] if f["kind"] == "secret")


def test_rule_update_rechecks_stored_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        r = hallmark_cli(srv, "db", "update", "--mirror", str(mirror(tmp_path / "m1", rules=False)))
        assert r.returncode == 0, r.stderr
        layer = tar_layer({"app/settings.ini": f"[api]\ntoken = {TOKEN}\n".encode()})
        config, manifest = image([layer], {"config": {"User": "app"}})
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for blob in (layer, config):
                push_blob(c, "recheck/app", blob)
            assert push_manifest(c, "recheck/app", "v1", manifest, OCI_MANIFEST).status_code == 201
            digest = sha256(manifest)
            assert wait_for(c, "recheck/app", digest)["status"] == "done"
            url = f"/api/v1/repositories/recheck/app/images/{digest}"
            before = c.get(f"{url}/reports/content").json()
            assert "hallmark-test-token" not in secrets_in(before)
            secrets_before = c.get(url).json()["summary"]["combined"]["by_kind"]["secrets"]

            r = hallmark_cli(srv, "db", "update", "--mirror", str(mirror(tmp_path / "m2", rules=True)))
            assert r.returncode == 0, r.stderr
            after = poll(
                lambda: c.get(f"{url}/reports/content").json(),
                lambda rep: rep["rules"]["digest"] != before["rules"]["digest"],
                "a content re-check",
            )
            assert "hallmark-test-token" in secrets_in(after)
            finding = next(f for f in after["findings"] if f["rule_id"] == "hallmark-test-token")
            assert finding["path"] == "/app/settings.ini" and TOKEN not in json.dumps(after)
            # the combined counts follow (the match queued after the re-check)
            combined = poll(
                lambda: c.get(url).json()["summary"]["combined"]["by_kind"]["secrets"],
                lambda counts: sum(counts.values()) > sum(secrets_before.values()),
                "the combined counts update",
            )
            events = c.get("/api/v1/events", params={"type": "image.content_rechecked"}).json()["events"]
            assert [e["digest"] for e in events] == [digest]

        # the CLI, reading the same data folder's rules, finds the same secrets
        res = CliRunner().invoke(
            app,
            ["scan", f"{srv.host}/recheck/app:v1", "--insecure", "--scanners", "secret", "-f", "json"],
            env={"HALLMARK_DATA_DIR": str(data), "HALLMARK_DATABASE_URL": None},
        )
        assert res.exit_code == 0, res.output
        cli = sorted(f["rule_id"] for f in json.loads(res.stdout)["content_findings"])
        assert cli == secrets_in(after)
        assert sum(combined.values()) == len(cli)
        # every stored image now carries the current rules' report: another rule-update job reads nothing
        hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(data)}))
        try:
            assert stale_images(hm.pipeline, after["rules"]["digest"]) == []
            assert recheck_all(hm.pipeline) == {"queued": 0}
            assert stale_images(hm.pipeline, before["rules"]["digest"]) == [("recheck/app", digest)]
        finally:
            hm.close()
    finally:
        srv.stop()

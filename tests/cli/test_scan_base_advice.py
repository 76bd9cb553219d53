"""``hallmark scan`` table output names the base image and the upgrade advice a catalog gives:
the Hallmark server the image is pulled from (with the same credentials, access control on), or the
local data folder's catalog for a local image; without a catalog it says nothing about a base."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from hallmark.cli import app
from tests.conftest import Server
from tests.ocihelp import image, push_blob, push_manifest, sha256, tar_layer, write_oci_layout

runner = CliRunner()


@dataclass
class Catalog:
    server: Server
    admin: tuple[str, str]
    old: str  # adv/base v1: deprecated, the base of adv/app
    new: str  # adv/base v2: approved
    app_layers: list[bytes]


def _wait(c: httpx.Client, repo: str, digest: str) -> None:
    deadline = time.monotonic() + 60
    while c.get(f"/api/v1/repositories/{repo}/images/{digest}").json().get("status") not in ("done", "failed"):
        assert time.monotonic() < deadline, f"{repo}@{digest} never indexed"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    data = tmp_path_factory.mktemp("scan-advice") / "data"
    data.mkdir()
    srv = Server(data, access=True).start()
    try:
        admin = ("admin", (data / "initial-admin-password").read_text().strip())
        base_v1 = tar_layer({"etc/base-release": b"1"})
        base_v2 = tar_layer({"etc/base-release": b"2"})
        app_layer = tar_layer({"srv/app.py": b"print('hi')"})
        digests = []
        with httpx.Client(base_url=srv.url, auth=admin, timeout=30) as c:
            for repo, tag, layers in (
                ("adv/base", "v1", [base_v1]),
                ("adv/base", "v2", [base_v2]),
                ("adv/app", "v1", [base_v1, app_layer]),
            ):
                config, manifest = image(layers)
                for blob in (*layers, config):
                    push_blob(c, repo, blob)
                assert push_manifest(c, repo, tag, manifest).status_code == 201
                digests.append(sha256(manifest))
                _wait(c, repo, digests[-1])
            old, new, _ = digests
            for digest, to in ((new, "approved"), (old, "approved"), (old, "deprecated")):
                r = c.post(
                    f"/api/v1/repositories/adv/base/images/{digest}/catalog/promote",
                    json={"to": to, "reason": "test", "force": True},
                )
                assert r.status_code == 200, r.text
        yield Catalog(srv, admin, old, new, [base_v1, app_layer])
    finally:
        srv.stop()


def scan(*args: str, data: Path) -> Result:
    return runner.invoke(
        app, ["scan", "--scanners", "vuln", *args], env={"HALLMARK_DATA_DIR": str(data), "COLUMNS": "200"}
    )


def test_remote_image_gets_the_servers_advice(catalog: Catalog, tmp_path: Path) -> None:
    creds = "{}:{}".format(*catalog.admin)
    ref = f"{catalog.server.host}/adv/app:v1"
    r = scan("--insecure", "--creds", creds, ref, data=tmp_path / "no-data")
    assert r.exit_code == 0, r.output
    out = r.output
    assert f"Base image: adv/base@{catalog.old[:19]} (deprecated" in out
    assert f"layer prefix, per {catalog.server.host}" in out
    assert "Upgrade advised: the base image is deprecated." in out
    assert f"consider adv/base@{catalog.new[:19]}: removes 0 critical/high, adds 0, grade" in out
    # JSON is the report schema: no base there.
    r = scan("--insecure", "--creds", creds, "-f", "json", ref, data=tmp_path / "no-data")
    assert r.exit_code == 0 and '"base_image"' not in r.stdout
    # The approved base itself has no base in the catalog, and says so.
    r = scan("--insecure", "--creds", creds, f"{catalog.server.host}/adv/base:v2", data=tmp_path / "no-data")
    assert r.exit_code == 0 and f"Base image: none found in the catalog of {catalog.server.host}" in r.output


def test_local_image_is_judged_by_the_local_catalog_or_not_at_all(catalog: Catalog, tmp_path: Path) -> None:
    write_oci_layout(tmp_path / "layout", "v1", catalog.app_layers)
    r = scan(f"oci:{tmp_path / 'layout'}:v1", data=catalog.server.data_dir)
    assert r.exit_code == 0, r.output
    assert f"Base image: adv/base@{catalog.old[:19]} (deprecated" in r.output
    assert f"per {catalog.server.data_dir}" in r.output and f"consider adv/base@{catalog.new[:19]}" in r.output
    r = scan(f"oci:{tmp_path / 'layout'}:v1", data=tmp_path / "no-data")  # no catalog: no guess
    assert r.exit_code == 0 and "Base image" not in r.output

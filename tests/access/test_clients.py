"""skopeo and oras with credentials through the Docker token flow; denied operations; no secret in the log."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.access.conftest import Site
from tests.ocihelp import sha256, tar_layer, write_oci_layout


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Real clients on SQLite only: the token flow is the same code on PostgreSQL (tested there via HTTP)."""
    return str(request.param)


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (make test installs it)")
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, check=check, timeout=120
    )


def creds(site: Site, user: str) -> str:
    return f"{user}:{site.passwords[user]}"


def test_skopeo_push_pull_with_token_flow(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    layers = [tar_layer({"etc/hello": b"hello\n"})]
    digest = write_oci_layout(src, "v1", layers)
    dest = f"docker://{site.server.host}/team-a/skopeo:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(site, "alice"), f"oci:{src}:v1", dest)
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds(site, "alice"), dest).stdout)
    assert info["Digest"] == digest
    # Blob mounts between repositories the user may read.
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        creds(site, "alice"),
        "--dest-creds",
        creds(site, "alice"),
        dest,
        f"docker://{site.server.host}/team-a/skopeo-copy:v1",
    )
    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds(site, "alice"), dest, f"oci:{out}:v1")
    assert (out / "blobs" / "sha256" / sha256(layers[0]).split(":")[1]).read_bytes() == layers[0]

    # Denied: bob may not push there, anonymous may not read it, alice may not delete.
    denied = skopeo(
        "copy", "--dest-tls-verify=false", "--dest-creds", creds(site, "bob"), f"oci:{src}:v1", dest, check=False
    )
    assert denied.returncode != 0
    assert re.search(r"denied|unauthorized|authentication required", denied.stderr, re.I), denied.stderr
    anon = skopeo("inspect", "--tls-verify=false", "--no-creds", dest, check=False)
    assert anon.returncode != 0 and re.search(r"unauthorized|authentication required", anon.stderr, re.I)
    nodelete = skopeo("delete", "--tls-verify=false", "--creds", creds(site, "alice"), dest, check=False)
    assert nodelete.returncode != 0
    skopeo("delete", "--tls-verify=false", "--creds", creds(site, "admin"), dest)
    # The robot pushes with its token as the password.
    robot = f"ci-bot:{site.robot_token}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", robot, f"oci:{src}:v1", dest)
    nope = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        robot,
        f"oci:{src}:v1",
        f"docker://{site.server.host}/pub/robot:v1",
        check=False,
    )
    assert nope.returncode != 0


def test_oras_login_push_pull(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oras_client = pytest.importorskip("oras.client")
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("release notes")
    cfg = str(tmp_path / "docker.json")
    client = oras_client.OrasClient(hostname=site.server.host, insecure=True)
    client.login(username="alice", password=site.passwords["alice"], hostname=site.server.host, config_path=cfg)
    client.push(target=f"{site.server.host}/team-a/oras:v1", files=["notes.txt"])
    files = client.pull(target=f"{site.server.host}/team-a/oras:v1", outdir=str(tmp_path / "pulled"))
    assert Path(files[0]).read_text() == "release notes"

    bob = oras_client.OrasClient(hostname=site.server.host, insecure=True)
    bob.login(username="bob", password=site.passwords["bob"], hostname=site.server.host, config_path=cfg)
    with pytest.raises(Exception):  # oras raises ValueError or requests errors on 401/403
        bob.push(target=f"{site.server.host}/team-a/oras:v2", files=["notes.txt"])
    with httpx.Client(base_url=site.server.url, auth=("bob", site.passwords["bob"])) as c:
        assert c.get("/v2/team-a/oras/tags/list").status_code == 403  # bob reads team-a/app only


def test_no_secret_in_server_log(site: Site) -> None:
    # Exercise failures with secrets in them too: wrong passwords must not be echoed.
    httpx.get(site.server.url + "/auth/token", auth=("alice", "Wrong-But-Secret-Value-42"))
    httpx.get(site.server.url + "/v2/", headers={"Authorization": "Bearer forged.Secret-JWT-Value.xyz"})
    site.token("alice", "repository:team-a/app:pull")
    log = site.log.read_text(errors="replace")
    assert "GET /v2/" in log or "hallmark" in log.lower()  # it is the real log
    for secret in [*site.secrets, "Wrong-But-Secret-Value-42", "Secret-JWT-Value"]:
        assert secret not in log, f"secret {secret[:6]}... found in server log"
        assert secret.split(".")[-1] not in log  # no JWT signature either
    assert "password:" not in log  # no bootstrap: users existed before the first start

"""``hallmark sbom``/``scan`` read a private image from a real ``hallmark serve`` with access on:
with ``--creds``, with ``-u --password-stdin``, with a containers auth.json and with
~/.docker/config.json (HOME and XDG_RUNTIME_DIR point at temp folders), never echoing the password."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hallmark.cli import app
from tests.access.conftest import PASSWORDS, Site, seed
from tests.conftest import Server
from tests.ocihelp import image, push_blob, push_manifest, tar_layer

runner = CliRunner()
PACKAGE_METADATA = "Metadata-Version: 2.1\nName: privpkg\nVersion: 1.2.3\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """tests/access's seeded server with access on; SQLite only (credentials are a client matter)."""
    data = tmp_path_factory.mktemp("cli-auth") / "data"
    data.mkdir()
    tid, token = seed(data, None)
    srv = Server(data, None, access=True).start()
    try:
        yield Site(srv, dict(PASSWORDS), token, tid)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def private_ref(site: Site) -> Iterator[str]:
    layer = tar_layer({"usr/lib/python3/dist-packages/privpkg-1.2.3.dist-info/METADATA": PACKAGE_METADATA.encode()})
    config, manifest = image([layer])
    with site.client("alice", "repository:team-a/private:push,pull") as c:
        push_blob(c, "team-a/private", layer)
        push_blob(c, "team-a/private", config)
        assert push_manifest(c, "team-a/private", "v1", manifest).status_code == 201
    yield f"{site.server.host}/team-a/private:v1"


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str | None]:
    """An environment whose credential files are all under tmp_path (and none exist yet)."""
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir()
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_CONFIG_HOME": None,
        "REGISTRY_AUTH_FILE": None,
        "DOCKER_CONFIG": None,
    }


def sbom(env: dict[str, str | None], *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, ["sbom", *args, "--insecure", "-f", "json"], env=env, input=stdin)


def packages(res: Result) -> set[str]:
    assert res.exit_code == 0, res.output
    return {p["name"] for p in json.loads(res.stdout)["packages"]}


def test_anonymous_read_of_a_private_image_says_how_to_log_in(
    site: Site, private_ref: str, home: dict[str, str | None]
) -> None:
    res = sbom(home, private_ref)
    assert res.exit_code != 0, res.output
    assert "authentication required" in res.stderr and "--creds" in res.stderr


def test_creds_option(site: Site, private_ref: str, home: dict[str, str | None]) -> None:
    password = site.passwords["alice"]
    assert "privpkg" in packages(sbom(home, private_ref, "--creds", f"alice:{password}"))
    wrong = sbom(home, private_ref, "--creds", "alice:not-the-password")
    assert wrong.exit_code != 0 and "refused the credentials" in wrong.stderr
    assert "not-the-password" not in wrong.output
    # no password and no terminal: a clear error instead of a hang
    res = sbom(home, private_ref, "--creds", "alice")
    assert res.exit_code != 0 and "--password-stdin" in res.stderr


def test_username_and_password_stdin(site: Site, private_ref: str, home: dict[str, str | None]) -> None:
    password = site.passwords["bob"]  # bob reads team-a/app only through a team: not this repository
    res = sbom(home, private_ref, "-u", "alice", "--password-stdin", stdin=site.passwords["alice"] + "\n")
    assert "privpkg" in packages(res)
    assert site.passwords["alice"] not in res.output
    res = sbom(home, private_ref, "-u", "bob", "--password-stdin", stdin=password + "\n")
    assert res.exit_code != 0 and password not in res.output
    res = sbom(home, private_ref, "--password-stdin", stdin="x\n")
    assert res.exit_code != 0 and "needs -u" in res.stderr


def _auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_containers_auth_json(site: Site, private_ref: str, home: dict[str, str | None]) -> None:
    auth = Path(str(home["XDG_RUNTIME_DIR"])) / "containers" / "auth.json"
    auth.parent.mkdir()
    auth.write_text(json.dumps({"auths": {site.server.host: _auth_entry("alice", site.passwords["alice"])}}))
    assert "privpkg" in packages(sbom(home, private_ref))
    # podman's per-namespace keys: the most specific one wins
    auth.write_text(
        json.dumps(
            {
                "auths": {
                    site.server.host: _auth_entry("bob", "wrong"),
                    f"{site.server.host}/team-a": _auth_entry("alice", site.passwords["alice"]),
                }
            }
        )
    )
    assert "privpkg" in packages(sbom(home, private_ref))
    # REGISTRY_AUTH_FILE comes first
    other = Path(str(home["HOME"])) / "other-auth.json"
    other.write_text(json.dumps({"auths": {site.server.host: _auth_entry("alice", "wrong-password")}}))
    res = sbom({**home, "REGISTRY_AUTH_FILE": str(other)}, private_ref)
    assert res.exit_code != 0 and "refused the credentials" in res.stderr and str(other) in res.stderr
    assert "wrong-password" not in res.output


def test_docker_config_json_and_scan(site: Site, private_ref: str, home: dict[str, str | None]) -> None:
    docker = Path(str(home["HOME"])) / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(
        json.dumps(
            {
                "auths": {
                    f"http://{site.server.host}": {"username": "alice", "password": site.passwords["alice"]},
                }
            }
        )
    )
    assert "privpkg" in packages(sbom(home, private_ref))
    res = runner.invoke(app, ["scan", private_ref, "--insecure", "--scanners", "secret", "-f", "json"], env=home)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["image"]["digest"].startswith("sha256:")
    # a credential helper is reported, not run
    docker.write_text(json.dumps({"auths": {site.server.host: {}}, "credsStore": "desktop"}))
    res = sbom(home, private_ref)
    assert res.exit_code != 0 and "docker-credential-desktop" in res.stderr


def test_tls_to_a_plain_http_registry_suggests_insecure(
    site: Site, private_ref: str, home: dict[str, str | None]
) -> None:
    res = runner.invoke(app, ["sbom", private_ref, "-f", "json"], env=home)
    assert res.exit_code != 0 and "--insecure" in res.stderr


def test_credential_files_unit(tmp_path: Path) -> None:
    """Docker Hub's URL key, a namespace key, and clear errors for files that cannot be used."""
    from hallmark.oci.auth import CredentialsError, find_credentials

    env = {"HOME": str(tmp_path)}
    docker = tmp_path / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": _auth_entry("hubuser", "p:w")}}))
    found = find_credentials("registry-1.docker.io", "library/alpine", env)
    assert found is not None and found.credentials == ("hubuser", "p:w") and str(docker) in found.source
    assert find_credentials("ghcr.io", "x/y", env) is None
    docker.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "not base64!"}}}))
    with pytest.raises(CredentialsError, match="not base64 of user:password") as err:
        find_credentials("ghcr.io", "x/y", env)
    assert str(docker) in str(err.value)
    docker.write_text("{")
    with pytest.raises(CredentialsError, match="not JSON"):
        find_credentials("ghcr.io", "x/y", env)

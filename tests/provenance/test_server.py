"""Provenance on a real ``hallmark serve`` with access control on (SQLite and PostgreSQL).

Images and attestations are pushed over HTTP; CI metadata is posted by robots (through the API
and through ``hallmark provenance attach --from-env`` with GitHub- and Azure-shaped
environments). The pipeline reads pushes in the background, so reads wait for the state they
expect (``until``), never for a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from hallmark.access.service import AccessService
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import push_blob, push_manifest, sha256
from tests.provenance.attest import (
    COMMIT_A,
    COMMIT_B,
    annotated_image,
    envelope,
    new_key,
    referrer,
    slsa_v1,
    write_public_key,
)

PASSWORD = "prov-Secret-123456"
REPO = "acme/shop"


@dataclass
class Site:
    server: Server
    tokens: dict[str, str]
    key: Any

    def client(self, who: str | None = "admin") -> httpx.Client:
        auth = None if who is None else (who, PASSWORD if who == "admin" else self.tokens[who])
        return httpx.Client(base_url=self.server.url, auth=auth, timeout=30)


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("provenance")
    data = root / "data"
    data.mkdir()
    key = new_key()
    write_public_key(key, root / "trust" / "keys" / "ci.pub")
    env = {"HALLMARK_DATA_DIR": str(data)}
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = env["HALLMARK_DATABASE_URL"] = pg.create_db(f"p{free_port()}")
    engine = make_engine(load_config(environ=env).database_url, 2)
    migrate(engine)
    svc = AccessService(load_config(environ=env), engine)
    svc.add_user("test", "admin", PASSWORD, ["administrator"])
    tokens = {
        "ci-in": svc.create_robot("test", "ci-in", ["repository:acme/*:pull,push"], 1)[1],
        "ci-read": svc.create_robot("test", "ci-read", ["repository:acme/*:pull"], 1)[1],
        "ci-out": svc.create_robot("test", "ci-out", ["repository:other/*:pull,push"], 1)[1],
    }
    svc.audit.flush()
    engine.dispose()
    srv = Server(
        data,
        db_url,
        env={"HALLMARK_SIGNING__TRUST_STORE": str(root / "trust"), "HALLMARK_PIPELINE__CONTENT_CHECKS": "false"},
        access=True,
    ).start()
    try:
        yield Site(srv, tokens, key)
    finally:
        srv.stop()


def until(read: Callable[[], Any], ok: Callable[[Any], bool], what: str) -> Any:
    """Read until ``ok`` holds (the pipeline works in the background); fail with the last value."""
    deadline = time.monotonic() + 90
    value = read()
    while not ok(value):
        if time.monotonic() > deadline:
            pytest.fail(f"never reached: {what}; last: {value}")
        time.sleep(0.2)
        value = read()
    return value


def push(c: httpx.Client, tag: str, commit: str = COMMIT_A) -> tuple[str, bytes]:
    layer, config, manifest = annotated_image(tag, commit)
    push_blob(c, REPO, layer)
    push_blob(c, REPO, config)
    r = push_manifest(c, REPO, tag, manifest)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], manifest


def prov(c: httpx.Client, digest: str) -> dict[str, Any]:
    r = c.get(f"/api/v1/repositories/{REPO}/images/{digest}/provenance")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def test_pushed_image_and_signed_attestation_are_read_verified_first(site: Site) -> None:
    with site.client() as c:
        digest, manifest = push(c, "v1")
        statement = slsa_v1(digest, commit=COMMIT_B)
        for layer in (envelope(statement, site.key, "ci"), envelope(slsa_v1(digest, commit="c" * 40), new_key())):
            push_blob(c, REPO, b"{}")
            push_blob(c, REPO, layer)
            art = referrer(manifest, layer)
            assert push_manifest(c, REPO, sha256(art), art).status_code == 201
        doc = until(lambda: prov(c, digest), lambda d: len(d["provenance"]) == 4, "four provenance sources")
        got = [(r["kind"], r["verified"], r["revision"]) for r in doc["provenance"]]
        assert got == [
            ("slsa", True, COMMIT_B),
            ("slsa", False, "c" * 40),
            ("annotation", None, COMMIT_A),
            ("label", None, COMMIT_A),
        ]
        assert doc["summary"]["conflicts"] == ["revision"]
        assert doc["provenance"][0]["run_url"] == "https://github.com/acme/shop/actions/runs/4242/attempts/1"
        image = until(
            lambda: c.get(f"/api/v1/repositories/{REPO}/images/{digest}"),
            lambda r: r.status_code == 200,
            "the image document",
        ).json()
        assert image["provenance"]["revision"] == COMMIT_B and image["provenance"]["verified"] is True
        assert image["provenance"]["source_repo"] == "https://github.com/acme/shop"


def test_post_ci_metadata_needs_push_on_the_body_repository(site: Site) -> None:
    with site.client() as admin:
        digest, _ = push(admin, "v2")
    body = {
        "image": f"{REPO}:v2",
        "source_repo": "git@github.com:acme/shop.git",
        "revision": COMMIT_A,
        "pipeline": "build",
        "run_id": "77",
        "run_url": "https://github.com/acme/shop/actions/runs/77",
    }
    with site.client(None) as anon:
        assert anon.post("/api/v1/provenance", json=body).status_code == 401
    with site.client("ci-read") as reader:
        assert reader.post("/api/v1/provenance", json=body).status_code == 403
    with site.client("ci-out") as stranger:
        assert stranger.post("/api/v1/provenance", json=body).status_code == 403
    with site.client("ci-in") as robot:
        # the middleware needs the body's repository before any handler: without one it is a 400
        for bad in ({"revision": COMMIT_A}, {"image": 5}, [body]):
            r = robot.post("/api/v1/provenance", json=bad)
            assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_INPUT"), bad
        assert robot.post("/api/v1/provenance", content=b"{not json").status_code == 400
        r = robot.post("/api/v1/provenance", json=body)
        assert r.status_code == 201, r.text
        row = r.json()["provenance"]
        assert r.json()["digest"] == digest
        assert (row["kind"], row["origin"], row["verified"]) == ("ci", "api:ci-in", None)
        assert row["source_repo"] == "https://github.com/acme/shop" and row["run_id"] == "77"
        # the same robot posting again replaces its row
        r = robot.post("/api/v1/provenance", json={**body, "image": f"{REPO}@{digest}", "run_id": "78"})
        assert r.status_code == 201
        ci = [x for x in prov(robot, digest)["provenance"] if x["kind"] == "ci"]
        assert [(x["origin"], x["run_id"]) for x in ci] == [("api:ci-in", "78")]
    with site.client() as admin:
        audit = admin.get("/api/v1/audit", params={"action": "provenance.attach"}).json()["entries"]
        assert {(e["actor"], e["repository"], e["digest"]) for e in audit} == {("ci-in", REPO, digest)}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"image": f"{REPO}:never-pushed"}, 404, "MANIFEST_UNKNOWN"),
        ({"image": f"{REPO}@sha256:" + "0" * 64}, 404, "MANIFEST_UNKNOWN"),
        ({"source_repo": "not a url"}, 400, "INVALID_INPUT"),
        ({"revision": "a b"}, 400, "INVALID_INPUT"),
        ({"run_url": "javascript:alert(1)"}, 400, "INVALID_INPUT"),
        ({"colour": "blue"}, 400, "INVALID_INPUT"),
        ({"image": "Acme/Shop:v3"}, 400, "NAME_INVALID"),
    ],
)
def test_bad_ci_metadata_is_refused_and_writes_nothing(
    site: Site, change: dict[str, str], status: int, code: str
) -> None:
    with site.client() as admin:
        digest, _ = push(admin, "v3")
        body = {"image": f"{REPO}:v3", "source_repo": "https://github.com/acme/shop", "revision": COMMIT_A}
        r = admin.post("/api/v1/provenance", json={**body, **change})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert [x for x in prov(admin, digest)["provenance"] if x["kind"] == "ci"] == []


GITHUB = {
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_SHA": COMMIT_A,
    "GITHUB_WORKFLOW": "build",
    "GITHUB_RUN_ID": "1234",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_REF": "refs/heads/main",
}
AZURE = {
    "BUILD_REPOSITORY_URI": "https://acme@dev.azure.com/acme/shop/_git/shop",
    "BUILD_SOURCEVERSION": COMMIT_B,
    "BUILD_DEFINITIONNAME": "shop-ci",
    "BUILD_BUILDID": "981",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI": "https://dev.azure.com/acme/",
    "SYSTEM_TEAMPROJECT": "shop",
    "BUILD_REQUESTEDFOR": "Jane Doe",
}
CI_VARS = [k for k in os.environ if k.startswith(("GITHUB_", "BUILD_", "SYSTEM_", "CI_", "GITLAB_"))]


def cli(site: Site, *args: str, env: dict[str, str], who: str = "ci-in") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    return subprocess.run(
        [sys.executable, "-m", "hallmark", "provenance", *args, "--insecure", "-u", who, "--password-stdin"],
        input=site.tokens[who] + "\n",
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("tag", "env", "expect"),
    [
        (
            "gh",
            GITHUB,
            {
                "source_repo": "https://github.com/acme/shop",
                "revision": COMMIT_A,
                "pipeline": "build",
                "run_id": "1234",
                "run_url": "https://github.com/acme/shop/actions/runs/1234",
                "facts": {"actor": "octocat", "ref": "refs/heads/main", "ci": "github-actions"},
            },
        ),
        (
            "az",
            AZURE,
            {
                "source_repo": "https://dev.azure.com/acme/shop/_git/shop",
                "revision": COMMIT_B,
                "pipeline": "shop-ci",
                "run_id": "981",
                "run_url": "https://dev.azure.com/acme/shop/_build/results?buildId=981",
                "facts": {"actor": "Jane Doe", "ci": "azure-pipelines"},
            },
        ),
    ],
)
def test_cli_attach_from_env(site: Site, tag: str, env: dict[str, str], expect: dict[str, Any]) -> None:
    with site.client() as admin:
        digest, _ = push(admin, tag)
    r = cli(site, "attach", f"{site.server.host}/{REPO}:{tag}", "--from-env", env=env)
    assert r.returncode == 0, r.stderr
    assert f"attached provenance to {REPO}@{digest}" in r.stdout
    with site.client() as admin:
        (row,) = [x for x in prov(admin, digest)["provenance"] if x["kind"] == "ci"]
    assert {k: row[k] for k in expect} == expect
    assert row["origin"] == "api:ci-in"
    shown = cli(site, "show", f"{site.server.host}/{REPO}@{digest}", env={})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[:3] == ["KIND", "VERIFIED", "SOURCE"]
    assert any(line.startswith("ci ") and expect["source_repo"] in line for line in shown.stdout.splitlines())


def test_cli_errors_are_one_line_with_exit_2(site: Site) -> None:
    r = cli(site, "attach", f"{site.server.host}/{REPO}:v1", "--from-env", env={})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "GITHUB_SHA" in r.stderr and "BUILD_SOURCEVERSION" in r.stderr and "CI_COMMIT_SHA" in r.stderr
    r = cli(site, "attach", f"{site.server.host}/{REPO}:missing", "--from-env", env=GITHUB)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot resolve") and r.stderr.count("\n") == 1
    r = cli(site, "attach", f"{site.server.host}/other/app:v1", "--from-env", env=GITHUB, who="ci-read")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1

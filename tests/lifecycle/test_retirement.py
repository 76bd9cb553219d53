"""Deprecation and retirement that users feel, against a real ``hallmark serve`` (SQLite and
PostgreSQL) with access control: retired manifests refused to skopeo with the replacement named,
deprecated ones served with a ``Warning: 299`` header, the per-namespace ``warn`` setting, blobs
still pullable, bad input refused without a change, and the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallmark.lifecycle.pull_policy import (
    PullPolicy,
    decide,
    namespaces_of,
    retired_pull_for,
    set_namespace_setting,
)
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from hallmark.registry.http import warning_header
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import push_image, sha256, tar_layer
from tests.pipeline.test_pipeline import wait_for

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
IMAGES = {
    "life/app": ("v1", "v2"),
    "warnns/app": ("v1", "v2"),
    "cli/app": ("v1", "v2"),
    "life/stay": ("v1",),
}


@dataclass
class Site:
    server: Server
    admin: tuple[str, str]
    env: dict[str, str]
    digests: dict[str, str] = field(default_factory=dict)  # "repo:tag" -> manifest digest

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30, auth=auth or self.admin)

    def ref(self, repo_tag: str) -> str:
        repo = repo_tag.rsplit(":", 1)[0]
        return f"{repo}@{self.digests[repo_tag]}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hallmark", *args], env=self.env, capture_output=True, text=True, timeout=120
        )


def layer_of(repo: str, tag: str) -> bytes:
    """push_image's default layer (deterministic: fixed mtimes)."""
    return tar_layer({"hello.txt": repo.encode() + tag.encode()})


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("retirement")
    data = root / "data"
    data.mkdir()
    # Gates that a plain test image passes without an advisory mirror: this suite is about stages.
    env = {"HALLMARK_CATALOG__GATE_MAX_SEVERITY": "none", "HALLMARK_CATALOG__REQUIRE_COMPLETE_SCAN": "false"}
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"t{free_port()}")
        env["HALLMARK_DATABASE_URL"] = db_url
    srv = Server(data, db_url, env=env, access=True).start()
    cli_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HALLMARK_DATA_DIR": str(data), **env}
    try:
        s = Site(srv, ("admin", (data / "initial-admin-password").read_text().strip()), cli_env)
        with s.client() as c:
            for repo, tags in IMAGES.items():
                for tag in tags:
                    s.digests[f"{repo}:{tag}"] = push_image(c, repo, tag)
            for repo_tag, digest in s.digests.items():
                assert wait_for(c, repo_tag.rsplit(":", 1)[0], digest, timeout=120)["status"] == "done"
            for repo_tag in ("life/app:v1", "warnns/app:v1", "cli/app:v1", "life/stay:v1"):
                assert promote(c, s, repo_tag, "approved").status_code == 200
        yield s
    finally:
        srv.stop()


def catalog_path(site: Site, repo_tag: str) -> str:
    repo = repo_tag.rsplit(":", 1)[0]
    return f"/api/v1/repositories/{repo}/images/{site.digests[repo_tag]}/catalog"


def promote(c: httpx.Client, site: Site, repo_tag: str, to: str, reason: str = "reviewed", **kw: Any) -> httpx.Response:
    return c.post(catalog_path(site, repo_tag) + "/promote", json={"to": to, "reason": reason, **kw})


def manifest(c: httpx.Client, repo: str, ref: str, method: str = "GET") -> httpx.Response:
    return c.request(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})


def skopeo(site: Site, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """skopeo ``inspect`` or ``copy`` (from the server) as the administrator."""
    creds = ["--creds" if command == "inspect" else "--src-creds", f"{site.admin[0]}:{site.admin[1]}"]
    return subprocess.run(
        ["skopeo", "--insecure-policy", command, *creds, *args], capture_output=True, text=True, timeout=120
    )


needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (make test installs it)")


def test_deprecated_pull_is_served_with_a_warning_naming_the_replacement(site: Site) -> None:
    with site.client() as c:
        for ref in ("v1", site.digests["life/app:v1"]):
            assert "Warning" not in manifest(c, "life/app", ref).headers  # approved: no warning
        r = promote(c, site, "life/app:v1", "deprecated", reason='superseded by "v2"', replacement="life/app:v2")
        assert r.status_code == 200, r.text
        entry = r.json()["entry"]
        assert entry["replacement"] == "life/app:v2" and entry["stage_reason"] == 'superseded by "v2"'
        assert entry["stage_changed_at"]
        expected = (
            f'299 - "life/app@{site.digests["life/app:v1"]} is deprecated (superseded by \\"v2\\"); '
            'use life/app:v2 instead"'
        )
        for ref in ("v1", site.digests["life/app:v1"]):
            for method in ("GET", "HEAD"):
                r = manifest(c, "life/app", ref, method)
                assert r.status_code == 200 and r.headers["Warning"] == expected, (method, ref, r.headers)
        assert "Warning" not in manifest(c, "life/app", "v2").headers
        doc = c.get(f"/api/v1/repositories/life/app/images/{site.digests['life/app:v1']}").json()["catalog"]
        assert (doc["stage"], doc["replacement"], doc["stage_reason"]) == (
            "deprecated",
            "life/app:v2",
            'superseded by "v2"',
        )
        history = c.get(catalog_path(site, "life/app:v1")).json()["history"]
        assert history[-1]["to"] == "deprecated" and history[-1]["detail"]["replacement"] == "life/app:v2"


@needs_skopeo
def test_retired_pull_is_refused_naming_the_replacement_and_blobs_stay(site: Site, tmp_path: Path) -> None:
    with site.client() as c:
        if c.get(catalog_path(site, "life/app:v1")).json()["stage"] != "deprecated":
            assert promote(c, site, "life/app:v1", "deprecated", replacement="life/app:v2").status_code == 200
        # Retiring without naming a replacement keeps the deprecation's.
        r = promote(c, site, "life/app:v1", "retired", reason="end of support")
        assert r.status_code == 200, r.text
        assert r.json()["entry"]["replacement"] == "life/app:v2"
        for ref in ("v1", site.digests["life/app:v1"]):
            r = manifest(c, "life/app", ref)
            assert r.status_code == 403, r.text
            (err,) = r.json()["errors"]
            assert err["code"] == "DENIED"
            assert err["message"] == (
                f"life/app@{site.digests['life/app:v1']} is retired (end of support); use life/app:v2 instead"
            )
            head = manifest(c, "life/app", ref, "HEAD")
            assert head.status_code == 403 and "Warning" not in head.headers
        # The blobs a retired image shares with others stay pullable.
        layer = layer_of("life/app", "v1")
        blob = c.get(f"/v2/life/app/blobs/{sha256(layer)}")
        assert blob.status_code == 200 and blob.content == layer
        assert manifest(c, "life/app", "v2").status_code == 200  # the replacement itself
        # Refused pulls are in the audit log, with the digest and why.
        entries = c.get("/api/v1/audit", params={"action": "pull", "repo": "life/app"}).json()["entries"]
        refused = [e for e in entries if e["result"] == "denied" and e["digest"] == site.digests["life/app:v1"]]
        assert len(refused) >= 2 and "retired" in refused[-1]["detail"]["reason"], entries
    host = site.server.host
    for ref in ("life/app:v1", site.ref("life/app:v1")):
        inspect = skopeo(site, "inspect", "--tls-verify=false", f"docker://{host}/{ref}")
        assert inspect.returncode != 0, inspect.stdout
        assert "denied" in inspect.stderr.lower() and "use life/app:v2 instead" in inspect.stderr, inspect.stderr
    copy = skopeo(site, "copy", "--src-tls-verify=false", f"docker://{host}/life/app:v1", f"oci:{tmp_path / 'out'}:v1")
    assert copy.returncode != 0 and "use life/app:v2 instead" in copy.stderr, copy.stderr
    ok = skopeo(site, "inspect", "--tls-verify=false", f"docker://{host}/life/app:v2")
    assert ok.returncode == 0, ok.stderr


@needs_skopeo
def test_namespace_warn_serves_retired_images_with_a_warning(site: Site) -> None:
    v2 = site.ref("warnns/app:v2")
    with site.client() as c:
        r = c.get("/api/v1/namespaces/warnns/lifecycle")
        assert r.status_code == 200
        assert r.json() == {
            "namespace": "warnns",
            "retired_pull": None,
            "effective": {"retired_pull": "deny", "from": "default"},
        }
        bad = c.put("/api/v1/namespaces/warnns/lifecycle", json={"retired_pull": "maybe"})
        assert bad.status_code == 400 and c.get("/api/v1/namespaces/warnns/lifecycle").json()["retired_pull"] is None
        assert c.put("/api/v1/namespaces/Bad_Name/lifecycle", json={"retired_pull": "warn"}).status_code in (400, 404)
        r = c.put("/api/v1/namespaces/warnns/lifecycle", json={"retired_pull": "warn"})
        assert r.status_code == 200, r.text
        assert r.json()["effective"] == {"retired_pull": "warn", "from": "namespace warnns"}
        r = promote(c, site, "warnns/app:v1", "retired", reason="rebuilt on bookworm", replacement=v2)
        assert r.status_code == 200, r.text
        for ref in ("v1", site.digests["warnns/app:v1"]):
            for method in ("GET", "HEAD"):
                r = manifest(c, "warnns/app", ref, method)
                assert r.status_code == 200, r.text
                warning = r.headers["Warning"]
                assert warning.startswith('299 - "warnns/app@') and "is retired (rebuilt on bookworm)" in warning
                assert f"use {v2} instead" in warning and "namespace warnns allows pulls of retired images" in warning
        inspect = skopeo(site, "inspect", "--tls-verify=false", f"docker://{site.server.host}/warnns/app:v1")
        assert inspect.returncode == 0, inspect.stderr
        # Back to the default (deny): refused again, naming the replacement by digest.
        assert c.put("/api/v1/namespaces/warnns/lifecycle", json={"retired_pull": None}).status_code == 200
        r = manifest(c, "warnns/app", "v1")
        assert r.status_code == 403 and f"use {v2} instead" in r.json()["errors"][0]["message"]
        entries = c.get("/api/v1/audit", params={"action": "namespace.lifecycle"}).json()["entries"]
        changes = [(e["actor"], e["detail"]["retired_pull"], e["detail"]["previous"]) for e in entries]
        assert sorted(changes, key=str) == sorted([("admin", "warn", None), ("admin", None, "warn")], key=str)


def test_bad_input_is_refused_and_changes_nothing(site: Site) -> None:
    ref = "life/stay:v1"
    with site.client() as c:
        before = c.get(catalog_path(site, ref)).json()
        assert before["stage"] == "approved"
        cases = {
            "life/app:nope": "REPLACEMENT_UNKNOWN",
            "ghost/repo:v1": "REPLACEMENT_UNKNOWN",
            "life/app@sha256:" + "0" * 64: "REPLACEMENT_UNKNOWN",
            site.ref(ref): "REPLACEMENT_UNKNOWN",  # itself
            "life/app:v1": "REPLACEMENT_UNKNOWN",  # retired (by the test above, when skopeo ran)
            "not a reference": "INVALID_INPUT",
            "life/app": "INVALID_INPUT",
            "life/app@sha256:xyz": "INVALID_INPUT",
        }
        if c.get(catalog_path(site, "life/app:v1")).json()["stage"] != "retired":
            del cases["life/app:v1"]
        for replacement, code in cases.items():
            for to in ("deprecated", "retired"):
                r = promote(c, site, ref, to, replacement=replacement)
                assert r.status_code == 400, (replacement, r.text)
                assert r.json()["error"]["code"] == code, (replacement, r.text)
                assert replacement in r.json()["error"]["message"] or code == "INVALID_INPUT"
        r = promote(c, site, "life/app:v2", "retired", replacement="life/stay:v1")  # staging
        assert r.status_code == 409 and r.json()["error"]["code"] == "INVALID_TRANSITION", r.text
        assert "from staging to retired" in r.json()["error"]["message"]
        assert c.get(catalog_path(site, "life/app:v2")).json()["stage"] == "staging"
        r = promote(c, site, "life/app:v2", "approved", replacement="life/stay:v1")
        assert r.status_code == 400 and "applies to deprecated or retired" in r.json()["error"]["message"], r.text
        assert c.get(catalog_path(site, "life/app:v2")).json()["stage"] == "staging"
        assert c.get(catalog_path(site, ref)).json() == before
        assert "Warning" not in manifest(c, "life/stay", "v1").headers


def test_cli_deprecate_and_retire(site: Site) -> None:
    v1, v2 = site.ref("cli/app:v1"), site.ref("cli/app:v2")
    r = site.cli("catalog", "deprecate", v1, "--replacement", "cli/app:nope", "--reason", "moving on")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "replacement cli/app:nope is not in the registry" in r.stderr
    r = site.cli("catalog", "retire", "cli/app:v1", "--reason", "x")
    assert r.returncode == 2 and "must be REPO@DIGEST" in r.stderr and r.stderr.strip().count("\n") == 0
    r = site.cli("catalog", "retire", v2, "--reason", "never approved")
    assert r.returncode == 2 and "from staging to retired" in r.stderr, r.stderr
    r = site.cli("catalog", "deprecate", v1, "--replacement", v2, "--reason", " ")
    assert r.returncode == 2 and "reason is required" in r.stderr, r.stderr
    with site.client() as c:
        assert c.get(catalog_path(site, "cli/app:v1")).json()["stage"] == "approved"
        assert c.get(catalog_path(site, "cli/app:v2")).json()["stage"] == "staging"

    r = site.cli("catalog", "deprecate", v1, "--replacement", "cli/app:v2", "--reason", "v2 is out")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{v1}: approved -> deprecated (replacement: cli/app:v2)"
    with site.client() as c:  # the server sees the CLI's change at once (no cache to go stale)
        resp = manifest(c, "cli/app", "v1")
        assert resp.status_code == 200 and "use cli/app:v2 instead" in resp.headers["Warning"]
    r = site.cli("catalog", "retire", v1, "--replacement", v2, "--reason", "v1 unsupported")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{v1}: deprecated -> retired (replacement: {v2})"
    with site.client() as c:
        resp = manifest(c, "cli/app", "v1")
        assert resp.status_code == 403 and f"use {v2} instead" in resp.json()["errors"][0]["message"]
        (approved, h2, h3) = c.get(catalog_path(site, "cli/app:v1")).json()["history"]
        assert approved["to"] == "approved"
        assert (h2["actor"], h2["to"], h2["reason"], h3["to"], h3["detail"]["replacement"]) == (
            "cli",
            "deprecated",
            "v2 is out",
            "retired",
            v2,
        )
        entries = c.get("/api/v1/audit", params={"action": "promote", "actor": "cli"}).json()["entries"]
        assert {e["detail"].get("replacement") for e in entries if e["digest"] == site.digests["cli/app:v1"]} == {
            "cli/app:v2",
            v2,
        }


# -- the decision itself -----------------------------------------------------------------------


def test_warning_header_cannot_be_broken_by_a_stored_reason() -> None:
    assert warning_header('a "quoted"\r\nX-Evil: 1\\ é') == '299 - "a \\"quoted\\" X-Evil: 1\\\\ ?"'


@pytest.fixture(params=["sqlite", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_db(f"p{free_port()}")
    else:
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    engine = make_engine(url, 4)
    migrate(engine)
    yield MetadataStore(engine)
    engine.dispose()


def test_registry_hook_answers_as_decide_and_survives_a_lost_connection(meta: MetadataStore) -> None:
    from hallmark.catalog.tables import catalog_entries
    from hallmark.metadata.store import utcnow

    digests = {stage: "sha256:" + str(i) * 64 for i, stage in enumerate(("approved", "deprecated", "retired"), 1)}
    with meta.transaction() as conn:
        for stage, digest in digests.items():
            conn.execute(
                catalog_entries.insert().values(
                    repo_name="ns/app", digest=digest, stage=stage, replacement="ns/app:v2", updated_at=utcnow()
                )
            )
    hook = PullPolicy(meta, "deny")
    unknown = "sha256:" + "9" * 64
    for digest in [*digests.values(), unknown]:
        assert hook("ns/app", digest) == decide(meta, "ns/app", digest, "deny")
    assert not hook("ns/app", digests["retired"]).allowed
    assert hook("ns/app", digests["deprecated"]).warning == (
        f"ns/app@{digests['deprecated']} is deprecated; use ns/app:v2 instead"
    )
    if meta.dialect == "postgresql":
        with meta.engine.connect() as conn:  # the server went away for every other session
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
    assert hook("ns/app", digests["retired"]) == decide(meta, "ns/app", digests["retired"], "deny")
    set_namespace_setting(meta, "ns", "warn")
    assert hook("ns/app", digests["retired"]).allowed


def test_namespace_resolution_innermost_wins_and_repository_beats_namespace(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}", 2)
    migrate(engine)
    meta = MetadataStore(engine)
    try:
        assert namespaces_of("a/b/c") == ["a/b", "a"] and namespaces_of("solo") == []
        assert retired_pull_for(meta, "a/b/c", "deny") == ("deny", None)
        set_namespace_setting(meta, "a", "warn")
        assert retired_pull_for(meta, "a/b/c", "deny") == ("warn", ("namespace", "a"))
        set_namespace_setting(meta, "a/b", "deny")
        assert retired_pull_for(meta, "a/b/c", "warn") == ("deny", ("namespace", "a/b"))
        assert retired_pull_for(meta, "a/x", "deny") == ("warn", ("namespace", "a"))
        assert set_namespace_setting(meta, "a/b", None) == "deny"
        assert retired_pull_for(meta, "a/b/c", "deny") == ("warn", ("namespace", "a"))
        from hallmark.lifecycle.tables import lifecycle_settings
        from hallmark.metadata.store import utcnow

        with meta.transaction() as conn:
            conn.execute(
                lifecycle_settings.insert().values(
                    scope_kind="repository", scope="a/b/c", retired_pull="deny", updated_at=utcnow()
                )
            )
        assert retired_pull_for(meta, "a/b/c", "warn") == ("deny", ("repository", "a/b/c"))
        with pytest.raises(ValueError):
            set_namespace_setting(meta, "a", "sometimes")
        # No catalog row: served, no warning, one read.
        d = decide(meta, "a/b/c", "sha256:" + "1" * 64)
        assert d.allowed and d.warning is None and d.message is None
    finally:
        engine.dispose()

"""Repository mirroring against real parts: Debian's ``docker-registry`` (the CNCF registry) with htpasswd
basic auth as the source, images pushed into it with skopeo, a real ``hallmark serve`` as the destination."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.mirror.synchelp import PASSWORD, SECRET_ENV, USER, Source, image, push_sbom_referrer
from tests.mirror.synchelp import source as source
from tests.pipeline.test_pipeline import wait_for

TERMINAL = ("succeeded", "partial", "failed", "retrying")


@pytest.fixture(scope="module")
def hallmark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("dest") / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        yield srv
    finally:
        srv.stop()


def run_and_wait(c: httpx.Client, mirror_id: int, timeout: float = 120) -> dict[str, Any]:
    r = c.post(f"/api/v1/mirrors/{mirror_id}/run")
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = c.get(f"/api/v1/mirrors/{mirror_id}/runs", params={"tags": "1"}).json()["runs"]
        run = next(x for x in runs if x["id"] == run_id)
        if run["state"] in TERMINAL:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run never finished: {run}")


def test_mirror_copies_filtered_tags_referrers_and_only_what_changed(
    source: Source, hallmark: Server, tmp_path: Path
) -> None:
    v10 = image({"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "app/.env": SECRET_ENV})
    source.push(
        "src/app",
        {
            "1.0": v10,
            "1.1": image({"app": "1.1"}),
            "2.0": image({"app": "2.0"}),
            "2.0-rc1": image({"app": "2.0-rc1"}),
            "dev": image({"app": "dev"}),
        },
        tmp_path,
    )
    source.push(
        "src/app",
        {"a": image({"m": "amd"}), "b": image({"m": "arm"}, "arm64")},
        tmp_path,
        {"a": "linux/amd64", "b": "linux/arm64"},
    )
    sbom = push_sbom_referrer(source, "src/app", v10.digest)
    with httpx.Client(base_url=hallmark.url, timeout=30) as c:
        r = c.post(
            "/api/v1/mirrors",
            json={
                "name": "app",
                "source": f"{source.host}/src/app",
                "destination": "mirrored/app",
                "insecure": True,
                "username": USER,
                "password": PASSWORD,
                "tags": {"include": ["1.*", "multi", r"regex:2\.[0-9]+"], "exclude": ["*-rc*"]},
                "platforms": ["linux/amd64"],
                "schedule": {"interval_seconds": 3600},
            },
        )
        assert r.status_code == 201, r.text
        m = r.json()
        assert m["has_password"] is True and PASSWORD not in r.text
        assert (
            PASSWORD not in c.get("/api/v1/mirrors").text and PASSWORD not in c.get(f"/api/v1/mirrors/{m['id']}").text
        )

        run = run_and_wait(c, m["id"])
        assert run["state"] == "succeeded", run
        assert {t["tag"]: t["state"] for t in run["tags"]} == {
            "1.0": "copied",
            "1.1": "copied",
            "2.0": "copied",
            "multi": "copied",
        }
        assert run["copied"] == 4 and run["failed"] == 0 and run["bytes"] > 0 and run["blobs_copied"] > 0
        tags = c.get("/v2/mirrored/app/tags/list").json()["tags"]
        assert sorted(tags) == ["1.0", "1.1", "2.0", "multi"]
        # The index keeps the wanted platform only (a rewritten index: its own digest).
        idx = c.get("/v2/mirrored/app/manifests/multi", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        assert [x["platform"]["architecture"] for x in idx.json()["manifests"]] == ["amd64"]
        # The referrer (an SBOM pushed with subject, found through the sha256-<hex> tag schema) came along.
        refs = c.get(f"/v2/mirrored/app/referrers/{v10.digest}").json()["manifests"]
        assert sbom in [x["digest"] for x in refs]
        # Pushed as the pipeline sees a push: indexed, matched, with findings.
        img = wait_for(c, "mirrored/app", v10.digest, timeout=120)
        assert img["status"] == "done", img
        assert img["distro"]["id"] == "debian"
        report = c.get(f"/api/v1/repositories/mirrored/app/images/{v10.digest}/reports/content").json()
        assert any(f["kind"] == "secret" for f in report["findings"]), report

        # Second run: nothing changed, nothing fetched.
        again = run_and_wait(c, m["id"])
        assert again["state"] == "succeeded", again
        assert (again["copied"], again["skipped"], again["blobs_copied"], again["bytes"]) == (0, 4, 0, 0)

        # A new tag upstream and a moved one: only those are copied.
        source.push("src/app", {"1.2": image({"app": "1.2"}), "1.1": image({"app": "1.1 rebuilt"})}, tmp_path)
        third = run_and_wait(c, m["id"])
        states = {t["tag"]: t["state"] for t in third["tags"]}
        assert states == {"1.0": "skipped", "1.1": "copied", "1.2": "copied", "2.0": "skipped", "multi": "skipped"}

        listing = c.get("/api/v1/mirrors").json()["mirrors"]
        assert [x["name"] for x in listing] == ["app"] and listing[0]["last_run"]["id"] == third["id"]
        assert c.delete(f"/api/v1/mirrors/{m['id']}").status_code == 204
        assert c.get(f"/api/v1/mirrors/{m['id']}").status_code == 404
    assert PASSWORD not in (hallmark.data_dir.parent / f"server-{hallmark.port}.log").read_text()


def test_bad_blobs_fail_their_tag_only_and_store_nothing(source: Source, hallmark: Server, tmp_path: Path) -> None:
    good, mismatch, short = image({"ok": "fine"}), image({"x": "will be corrupted " * 50}), image({"y": "cut " * 400})
    source.push("src/bad", {"good": good, "mismatch": mismatch, "short": short}, tmp_path)
    bad_mismatch, bad_short = source.blob_file(mismatch.layer_digests[0]), source.blob_file(short.layer_digests[0])
    data = bad_mismatch.read_bytes()
    bad_mismatch.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, other bytes
    bad_short.write_bytes(bad_short.read_bytes()[:-20])  # truncated
    with httpx.Client(base_url=hallmark.url, timeout=30) as c:
        body = {"source": f"{source.host}/src/bad", "destination": "mirrored/bad", "insecure": True}
        r = c.post("/api/v1/mirrors", json=dict(body, username=USER, password=PASSWORD))
        assert r.status_code == 201, r.text
        run = run_and_wait(c, r.json()["id"])
        tags = {t["tag"]: t for t in run["tags"]}
        assert tags["good"]["state"] == "copied"
        assert tags["mismatch"]["state"] == "failed" and "digest mismatch" in tags["mismatch"]["error"]
        assert tags["short"]["state"] == "failed" and "truncated" in tags["short"]["error"]
        assert run["state"] == "retrying" and run["next_retry_at"] and run["failed"] == 2
        assert sorted(c.get("/v2/mirrored/bad/tags/list").json()["tags"]) == ["good"]
        for digest in (mismatch.layer_digests[0], short.layer_digests[0]):
            assert c.head(f"/v2/mirrored/bad/blobs/{digest}").status_code == 404
        # Without credentials the source refuses: the run says why.
        r = c.post("/api/v1/mirrors", json=dict(body, name="nocreds"))
        run = run_and_wait(c, r.json()["id"])
        assert run["state"] == "retrying" and "authentication required" in run["error"]
        # Bad definitions are refused with a reason.
        for bad, why in (
            ({"source": "h/x", "destination": "Bad Name"}, "destination"),
            ({"source": "h/x", "destination": "d/x", "schedule": {"cron": "not cron"}}, "cron"),
            ({"source": "h/x", "destination": "d/x", "tags": {"include": ["regex:("]}}, "regular expression"),
            ({"source": "h/x", "destination": "d/x", "schedule": {"interval_seconds": 5}}, "interval_seconds"),
        ):
            r = c.post("/api/v1/mirrors", json=bad)
            assert r.status_code == 400 and why in r.text, r.text


def test_cli_add_and_run_here_or_on_a_worker(source: Source, tmp_path: Path) -> None:
    import sys

    source.push("src/cli", {"1.0": image({"c": "1"}), "nightly": image({"c": "n"})}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "HALLMARK_ACCESS__ENABLED": "false"}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hallmark", "mirror", *args],
            env=env, input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    r = cli(
        "add", f"{source.host}/src/cli", "cli/app", "--name", "cli-app", "--include", "1.*", "--cron", "0 3 * * *",
        "--insecure", "-u", USER, "--password-stdin", "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["has_password"] and m["schedule"]["cron"] == "0 3 * * *" and PASSWORD not in r.stdout
    r = cli("run", "cli-app", "--queue")  # for any worker: `hallmark worker` takes it
    assert r.returncode == 0 and "queued" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "hallmark", "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    r = cli("run", "cli-app")  # the worker copied 1.0: nothing left to copy
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped  1.0" in r.stdout and "nightly" not in r.stdout and "succeeded" in r.stdout


def test_tag_filters_and_schedules() -> None:
    import datetime as dt

    from hallmark.mirror.definitions import MirrorInputError, TagFilter, next_run, validate

    f = TagFilter.parse(["1.*", r"regex:v\d+"], ["*-rc*", "regex:.*-debug"])
    assert [t for t in ["1.0", "1.0-rc1", "v2", "v2x", "1.1-debug", "latest"] if f.wants(t)] == ["1.0", "v2"]
    assert TagFilter.parse(None, ["dev"]).wants("latest") and not TagFilter.parse(None, ["dev"]).wants("dev")
    at = dt.datetime(2026, 12, 6, 2, 30, tzinfo=dt.UTC)
    assert next_run(None, "0 3 * * *", at) == dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    assert next_run(3600, None, at) == at + dt.timedelta(hours=1)
    assert next_run(None, None, at) is None
    with pytest.raises(MirrorInputError, match="not both"):
        validate({"source": "h/x", "destination": "d/x", "interval_seconds": 60, "cron": "* * * * *"})
    hub = validate({"source": "docker.io/debian", "destination": "d/x"})
    assert (hub["source_registry"], hub["source_repository"], hub["insecure"]) == (
        "registry-1.docker.io",
        "library/debian",
        False,
    )
    assert validate({"source": "http://127.0.0.1:5000/a/b", "destination": "d/x"})["insecure"] is True
    with pytest.raises(MirrorInputError, match="needs a username"):
        validate({"source": "h/x", "destination": "d/x", "password": "p"})


def test_api_needs_admin_on_the_destination(tmp_path: Path) -> None:
    """Access control on: creating needs admin on the destination; other mirrors do not exist for a caller."""
    from hallmark.access.service import AccessService
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine, migrate

    data = tmp_path / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    users = {"root": "root-Secret-123456", "alice": "alice-Secret-654321", "bob": "bob-Secret-987654"}
    svc.add_user("test", "root", users["root"], ["administrator"])
    svc.add_user("test", "alice", users["alice"])
    svc.add_user("test", "bob", users["bob"])
    svc.grant("test", "principal", "alice", "namespace", "team-a", "admin")
    svc.grant("test", "principal", "bob", "namespace", "team-a", "write")
    svc.audit.flush()
    engine.dispose()
    srv = Server(data, access=True).start()
    body = {"source": "registry.example/x", "destination": "team-a/x", "username": "u", "password": "p-Secret-42"}
    try:

        def as_(user: str | None) -> httpx.Client:
            return httpx.Client(base_url=srv.url, auth=(user, users[user]) if user else None, timeout=30)

        with as_("bob") as bob, as_("alice") as alice, as_("root") as root, as_(None) as anon:
            assert bob.post("/api/v1/mirrors", json=body).status_code == 403
            assert anon.post("/api/v1/mirrors", json=body).status_code == 401
            r = alice.post("/api/v1/mirrors", json=body)
            assert r.status_code == 201, r.text
            mid = r.json()["id"]
            assert [m["id"] for m in alice.get("/api/v1/mirrors").json()["mirrors"]] == [mid]
            assert [m["id"] for m in root.get("/api/v1/mirrors").json()["mirrors"]] == [mid]
            assert bob.get("/api/v1/mirrors").json()["mirrors"] == []
            assert anon.get("/api/v1/mirrors").status_code == 401
            for method, path in (("GET", ""), ("GET", "/runs"), ("POST", "/run"), ("DELETE", "")):
                assert bob.request(method, f"/api/v1/mirrors/{mid}{path}").status_code == 404
            assert alice.get(f"/api/v1/mirrors/{mid}/runs").status_code == 200
            assert bob.patch(f"/api/v1/mirrors/{mid}", json={"enabled": False}).status_code == 404
            r = alice.patch(f"/api/v1/mirrors/{mid}", json={"enabled": False, "password": "p-Secret-43"})
            assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["has_password"], r.text
            assert "p-Secret-43" not in r.text
            r = alice.patch(f"/api/v1/mirrors/{mid}", json={"destination": "team-b/x"})
            assert r.status_code == 400 and "cannot be changed" in r.text
            audit = root.get("/api/v1/audit", params={"action": "mirror.create"}).json()
            entries = audit["entries"] if isinstance(audit, dict) else audit
            assert [e["actor"] for e in entries] == ["alice"]
            assert alice.delete(f"/api/v1/mirrors/{mid}").status_code == 204
            # A push mirror: admin on the local repository too, named ``destination`` or, as push mirrors
            # show it, ``repository`` (the guard reads the first given, as the definition does).
            push = {"direction": "push", "destination": "team-a/x", "remote": "partner.example/y"}
            assert bob.post("/api/v1/mirrors", json=push).status_code == 403
            r = alice.post("/api/v1/mirrors", json=push)
            assert r.status_code == 201, r.text
            doc = r.json()
            assert (doc["direction"], doc["repository"], doc["remote"]) == ("push", "team-a/x", "partner.example/y")
            push2 = {"direction": "push", "repository": "team-a/z", "remote": "partner.example/z"}
            assert bob.post("/api/v1/mirrors", json=push2).status_code == 403
            r = alice.post("/api/v1/mirrors", json=push2)
            assert r.status_code == 201, r.text
            assert r.json()["repository"] == "team-a/z"
            sneaky = {**push2, "destination": "team-b/x", "name": "sneaky"}  # destination wins, as in the definition
            assert alice.post("/api/v1/mirrors", json=sneaky).status_code == 403
            r = alice.post("/api/v1/mirrors", json={"direction": "push", "remote": "partner.example/q"})
            assert r.status_code == 400 and "'destination' or 'repository'" in r.text
        log = (srv.data_dir.parent / f"server-{srv.port}.log").read_text()
        assert "p-Secret-42" not in log and "p-Secret-43" not in log
    finally:
        srv.stop()

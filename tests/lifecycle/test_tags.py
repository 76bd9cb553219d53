"""Tag history ("time machine"), restore, garbage collection inside the window, expiration and
retention, through a real ``hallmark serve`` and the ``hallmark`` command.

"After the window" is reached by shrinking the repository's window to 0 (the same comparison
as time passing), never by waiting; expiration uses a 2-second label and waits for that due
time to pass before running the job, so no assertion depends on how fast anything runs.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallmark.access.service import AccessService
from hallmark.config import ConfigError, load_config
from hallmark.lifecycle.durations import format_duration, parse_duration
from hallmark.lifecycle.retention import RetentionPolicy, decide
from hallmark.lifecycle.tags import label_expiry
from hallmark.metadata.db import make_engine, migrate
from hallmark.registry.gc import manifests_to_collect
from tests.conftest import Server
from tests.ocihelp import image, push_blob, push_image, push_manifest, sha256, tar_layer

QUIET = {"HALLMARK_LIFECYCLE__SCHEDULER": "false"}  # jobs run only when a test runs them


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HALLMARK_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin", **QUIET}
    if not server.access:
        env["HALLMARK_ACCESS__ENABLED"] = "false"
    if server.db_url:
        env["HALLMARK_DATABASE_URL"] = server.db_url
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args], env=env, capture_output=True, text=True, timeout=300
    )


def history(c: httpx.Client, repo: str, tag: str) -> dict[str, Any]:
    r = c.get(f"/api/v1/repositories/{repo}/tags/{tag}/history")
    assert r.status_code == 200, r.text
    return r.json()


def moves(doc: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(e["action"], e["old_digest"], e["new_digest"]) for e in doc["entries"]]


def tag_digest(c: httpx.Client, repo: str, tag: str) -> str | None:
    r = c.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def eventually(check: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for something the server does in the background (a condition, not a duration)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.1)


def wait_indexed(c: httpx.Client, repo: str, digest: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: Any = None
    while time.monotonic() < deadline:
        r = c.get(f"/api/v1/repositories/{repo}/images/{digest}")
        if r.status_code == 200:
            doc = r.json()
            if doc["status"] in ("indexed", "scanning", "done", "failed"):
                return dict(doc)
        time.sleep(0.2)
    raise AssertionError(f"{repo}@{digest} never indexed: {doc}")


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("tags") / "data"
    data.mkdir()
    srv = Server(data, env=QUIET).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tm_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """SQLite and PostgreSQL: the history is written by the store's SQL on both."""
    from tests.conftest import PostgresServer, free_port

    data = tmp_path_factory.mktemp("tm") / "data"
    data.mkdir()
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"tm{free_port()}")
    srv = Server(data, db_url, env=QUIET).start()
    try:
        yield srv
    finally:
        srv.stop()


# -- history and restore ------------------------------------------------------------------------------
def test_history_records_push_move_delete_and_restore_brings_a_tag_back(tm_server: Server) -> None:
    with httpx.Client(base_url=tm_server.url, timeout=30) as c:
        a = push_image(c, "tm/app", "v1", files={"a": b"first"})
        b = push_image(c, "tm/app", "v1", files={"a": b"second"})
        assert push_image(c, "tm/app", "v1", files={"a": b"second"}) == b  # same digest again: no move
        other = push_image(c, "tm/app", "other", files={"a": b"never on v1"})
        assert c.delete("/v2/tm/app/manifests/v1").status_code == 202
        doc = history(c, "tm/app", "v1")
        assert moves(doc) == [("delete", b, None), ("move", a, b), ("push", None, a)]
        assert {e["actor"] for e in doc["entries"]} == {"127.0.0.1"}  # access control off: the client
        assert doc["current"] is None
        assert {r["digest"] for r in doc["restorable"]} == {a, b}

        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": a})
        assert r.status_code == 200, r.text
        assert r.json() == {"repository": "tm/app", "tag": "v1", "digest": a, "previous": None, "changed": True}
        assert tag_digest(c, "tm/app", "v1") == a
        doc = history(c, "tm/app", "v1")
        assert moves(doc)[0] == ("restore", None, a)
        assert [x["digest"] for x in doc["restorable"]] == [b]

        # A digest the tag never held: refused, nothing changes.
        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": other})
        assert r.status_code == 409 and r.json()["error"]["code"] == "NEVER_HELD", r.text
        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": "sha256:nothex"})
        assert r.status_code == 400
        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": b, "extra": 1})
        assert r.status_code == 400
        assert tag_digest(c, "tm/app", "v1") == a and len(history(c, "tm/app", "v1")["entries"]) == 4

        # Outside the window (the repository's window shrunk to nothing): refused, nothing changes.
        r = c.put("/api/v1/repositories/tm/app/retention", json={"time_machine": 0})
        assert r.status_code == 200 and r.json()["effective"]["time_machine"] == "0s", r.text
        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": b})
        assert r.status_code == 409 and r.json()["error"]["code"] == "OUTSIDE_WINDOW", r.text
        assert "time-machine window" in r.json()["error"]["message"]
        assert tag_digest(c, "tm/app", "v1") == a and len(history(c, "tm/app", "v1")["entries"]) == 4
        assert history(c, "tm/app", "v1")["restorable"] == []
        r = c.put("/api/v1/repositories/tm/app/retention", json={"time_machine": None})  # inherits 14 days again
        assert r.json()["effective"]["time_machine"] == "2w"

        # Deleting a manifest records the removal of every tag on it.
        assert c.delete(f"/v2/tm/app/manifests/{a}").status_code == 202
        assert moves(history(c, "tm/app", "v1"))[0] == ("delete", a, None)
        r = c.post("/api/v1/repositories/tm/app/tags/v1/restore", json={"digest": a})
        assert r.status_code == 404 and r.json()["error"]["code"] == "MANIFEST_UNKNOWN", r.text

        assert c.get("/api/v1/repositories/tm/app/tags/never/history").status_code == 404
        assert c.get("/api/v1/repositories/tm/nothing/tags/v1/history").status_code == 404


def test_cli_history_and_restore(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        a = push_image(c, "cli/app", "v1", files={"a": b"1"})
        b = push_image(c, "cli/app", "v1", files={"a": b"2"})
    out = cli(quiet_server, "tag", "history", "cli/app:v1")
    assert out.returncode == 0, out.stderr
    assert f"{a} -> {b}" in out.stdout and f"restorable: {a}" in out.stdout
    out = cli(quiet_server, "tag", "restore", "cli/app:v1", a)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cli/app:v1: {b} -> {a}"
    doc = json.loads(cli(quiet_server, "tag", "history", "cli/app:v1", "--json").stdout)
    assert moves(doc)[0] == ("restore", b, a) and doc["entries"][0]["actor"] == "cli"
    for args, message in [
        (("tag", "restore", "cli/app:v1", "sha256:" + "0" * 64), "never pointed at"),
        (("tag", "restore", "cli/app", a), "is not REPO:TAG"),
        (("tag", "restore", "cli/app:v1", "latest"), "is not a digest"),
        (("tag", "history", "cli/none:v1"), "not found"),
    ]:
        out = cli(quiet_server, *args)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, out
        assert len(out.stderr.strip().splitlines()) == 1


def test_history_names_the_pusher_and_restores_are_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    password = "tags-Secret-123456"
    svc.add_user("test", "alice", password, ["administrator"])
    svc.add_user("test", "bob", password, [])
    svc.grant("test", "principal", "bob", "namespace", "team", "read")
    svc.audit.flush()
    engine.dispose()
    srv = Server(data, access=True, env=QUIET).start()
    try:
        with httpx.Client(base_url=srv.url, auth=("alice", password), timeout=30) as c:
            a = push_image(c, "team/app", "v1", files={"a": b"1"})
            push_image(c, "team/app", "v1", files={"a": b"2"})
            doc = history(c, "team/app", "v1")
            assert [e["actor"] for e in doc["entries"]] == ["alice", "alice"]
            assert c.post("/api/v1/repositories/team/app/tags/v1/restore", json={"digest": a}).status_code == 200
            assert history(c, "team/app", "v1")["entries"][0]["actor"] == "alice"
            entries = c.get("/api/v1/audit", params={"action": "tag.restore"}).json()["entries"]
            assert [(e["actor"], e["repository"], e["digest"]) for e in entries] == [("alice", "team/app", a)]
        with httpx.Client(base_url=srv.url, auth=("bob", password), timeout=30) as c:
            assert c.get("/api/v1/repositories/team/app/tags/v1/history").status_code == 200  # pull is enough
            r = c.post("/api/v1/repositories/team/app/tags/v1/restore", json={"digest": a})
            assert r.status_code == 403  # restoring needs push
    finally:
        srv.stop()


# -- garbage collection ------------------------------------------------------------------------------------
def test_gc_keeps_a_manifest_inside_the_window_and_collects_it_after(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        old = push_image(c, "gc/app", "v1", files={"only-in-old": b"old layer"})
        wait_indexed(c, "gc/app", old)  # its SBOMs and reports are referrers: they go with it
        assert c.get(f"/v2/gc/app/referrers/{old}").json()["manifests"]
        layer = json.loads(c.get(f"/v2/gc/app/manifests/{old}").content)["layers"][0]["digest"]
        new = push_image(c, "gc/app", "v1", files={"only-in-new": b"new layer"})
        untagged = push_image(c, "gc/app", "gone", files={"gone": b"tag deleted"})
        assert c.delete("/v2/gc/app/manifests/gone").status_code == 202  # untagged, but only just
        layer_b = tar_layer({"never": b"tagged"})
        config_b, manifest_b = image([layer_b])
        push_blob(c, "gc/app", layer_b)
        push_blob(c, "gc/app", config_b)
        by_digest = sha256(manifest_b)
        assert push_manifest(c, "gc/app", by_digest, manifest_b).status_code == 201

        r = c.post("/api/v1/gc", params={"grace_seconds": 0})
        assert r.status_code == 200, r.text
        assert r.json()["manifests"] == []  # inside the window: kept, and restorable
        assert c.get(f"/v2/gc/app/manifests/{old}").status_code == 200
        assert c.get(f"/v2/gc/app/blobs/{layer}").status_code == 200

        # Past the window (shrunk to nothing, as if 14 days had gone by): collected with what only it kept.
        assert c.put("/api/v1/repositories/gc/app/retention", json={"time_machine": "0s"}).status_code == 200
        dry = c.post("/api/v1/gc", params={"grace_seconds": 0, "dry_run": "1"}).json()
        assert f"gc/app@{old}" in dry["manifests"] and c.get(f"/v2/gc/app/manifests/{old}").status_code == 200
        r = c.post("/api/v1/gc", params={"grace_seconds": 0})
        gone = r.json()["manifests"]
        assert f"gc/app@{old}" in gone and f"gc/app@{untagged}" in gone
        assert f"gc/app@{new}" not in gone and f"gc/app@{by_digest}" not in gone
        assert c.get(f"/v2/gc/app/manifests/{old}").status_code == 404
        assert c.get(f"/v2/gc/app/referrers/{old}").json()["manifests"] == []
        assert c.get(f"/v2/gc/app/blobs/{layer}").status_code == 404
        assert tag_digest(c, "gc/app", "v1") == new
        # A manifest pushed by digest, never tagged, is not the time machine's to collect.
        assert c.get(f"/v2/gc/app/manifests/{by_digest}").status_code == 200
        eventually(lambda: c.get(f"/api/v1/repositories/gc/app/images/{old}").status_code == 404)  # pipeline row


# -- expiration --------------------------------------------------------------------------------------------
def test_expiry_label_removes_the_tag_and_a_malformed_label_only_warns(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        short = push_image(
            c, "exp/app", "short", files={"s": b"1"}, config_extra={"config": {"Labels": {"quay.expires-after": "2s"}}}
        )
        bad = push_image(
            c,
            "exp/app",
            "bad",
            files={"b": b"2"},
            config_extra={"config": {"Labels": {"hallmark.expires-after": "soon"}}},
        )
        plain = push_image(c, "exp/app", "plain", files={"p": b"3"})
        for d in (short, bad, plain):
            assert wait_indexed(c, "exp/app", d)["status"] != "failed"
        doc = c.get(f"/api/v1/repositories/exp/app/images/{short}").json()["expiration"]
        assert doc["label"] == {"name": "quay.expires-after", "value": "2s", "seconds": 2}
        [due] = doc["tags"]
        assert due["tag"] == "short" and due["source"] == "label quay.expires-after=2s"
        warned = c.get(f"/api/v1/repositories/exp/app/images/{bad}").json()
        assert "hallmark.expires-after ignored" in warned["expiration"]["warning"], warned["expiration"]
        assert warned["expiration"]["tags"] == []
        assert c.get(f"/api/v1/repositories/exp/app/images/{plain}").json()["expiration"] == {"tags": []}

        expires_at = dt.datetime.fromisoformat(due["expires_at"].replace("Z", "+00:00"))
        time.sleep(max(0.0, (expires_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        out = cli(quiet_server, "lifecycle", "run", "--all", "--job", "tags.expire")
        assert out.returncode == 0, out.stderr
        [ran] = json.loads(out.stdout)["ran"]
        assert ran["job"] == "tags.expire" and any(
            e.startswith(f"exp/app:short@{short}") for e in ran["detail"]["expired"]
        )
        assert tag_digest(c, "exp/app", "short") is None
        assert tag_digest(c, "exp/app", "bad") == bad and tag_digest(c, "exp/app", "plain") == plain
        entry = history(c, "exp/app", "short")["entries"][0]
        assert (entry["action"], entry["actor"], entry["old_digest"]) == ("expire", "lifecycle", short)
        # Restorable like any removal within the window.
        assert c.post("/api/v1/repositories/exp/app/tags/short/restore", json={"digest": short}).status_code == 200


def test_repository_default_expiry(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        old = push_image(c, "expd/app", "old", files={"o": b"1"})
        r = c.put("/api/v1/repositories/expd/app/retention", json={"tag_expiry": "soon"})
        assert r.status_code == 400 and "tag_expiry" in r.json()["error"]["message"]
        r = c.put("/api/v1/repositories/expd/app/retention", json={"tag_expiry": "1s"})
        assert r.json()["effective"]["tag_expiry"] == "1s"
        wait_indexed(c, "expd/app", old)
        doc = c.get(f"/api/v1/repositories/expd/app/images/{old}").json()
        [due] = doc["expiration"]["tags"]
        expires_at = dt.datetime.fromisoformat(due["expires_at"].replace("Z", "+00:00"))
        time.sleep(max(0.0, (expires_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        out = cli(quiet_server, "lifecycle", "run", "--all", "--job", "tags.expire")
        assert out.returncode == 0, out.stderr
        assert tag_digest(c, "expd/app", "old") is None
        assert history(c, "expd/app", "old")["entries"][0]["action"] == "expire"
        c.put("/api/v1/repositories/expd/app/retention", json={"tag_expiry": None})


# -- retention ----------------------------------------------------------------------------------------------
def test_retention_dry_run_then_applied_by_the_job(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        d = {t: push_image(c, "ret/app", t, files={"t": t.encode()}) for t in ("pr-1", "pr-2", "pr-3", "pr-4", "v1")}
        r = c.put(
            "/v2/ret/app/manifests/stable",
            content=c.get(f"/v2/ret/app/manifests/{d['pr-1']}").content,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 201
        policy = {"keep_last": 2, "consider": ["pr-*"]}
        r = c.put("/api/v1/repositories/ret/app/retention", json={"policy": policy})
        assert r.status_code == 200, r.text
        plan = r.json()["plan"]
        assert [x["tag"] for x in plan["remove"]] == ["pr-2"]
        why = {x["tag"]: x["why"] for x in plan["keep"]}
        assert why["pr-4"] == why["pr-3"] == "among the last 2 pushed"
        assert why["pr-1"] == "image also tagged 'stable', which is kept"
        assert why["v1"].startswith("not considered")

        out = cli(quiet_server, "retention", "run", "--dry-run")
        assert out.returncode == 0, out.stderr
        assert f"would remove ret/app:pr-2 {d['pr-2']}: not among the last 2 pushed" in out.stdout
        assert tag_digest(c, "ret/app", "pr-2") == d["pr-2"]  # a dry run changes nothing

        out = cli(quiet_server, "lifecycle", "run", "--all", "--job", "retention")
        assert out.returncode == 0, out.stderr
        [ran] = json.loads(out.stdout)["ran"]
        assert ran["detail"]["removed"] == ["ret/app:pr-2"]
        assert [t for t in d if tag_digest(c, "ret/app", t) is None] == ["pr-2"]
        entry = history(c, "ret/app", "pr-2")["entries"][0]
        assert (entry["action"], entry["actor"]) == ("retention", "lifecycle")
        c.put("/api/v1/repositories/ret/app/retention", json={"policy": None})


def test_a_policy_that_would_delete_everything_is_refused_unless_forced(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        push_image(c, "all/app", "a", files={"a": b"1"})
        push_image(c, "all/app", "b", files={"b": b"2"})
        refused: list[dict[str, dict[str, int]]] = [{"policy": {}}, {"policy": {"keep_last": 0}}]
        for body in refused:
            r = c.put("/api/v1/repositories/all/app/retention", json=body)
            assert r.status_code == 409 and r.json()["error"]["code"] == "POLICY_REFUSED", r.text
        r = c.put("/api/v1/repositories/all/app/retention", json={"policy": {"consider": ["*"]}})
        assert r.status_code == 409 and "every tag of all/app" in r.json()["error"]["message"]
        r = c.put("/api/v1/namespaces/all/retention", json={"policy": {"consider": ["*"]}})
        assert r.status_code == 409 and r.json()["error"]["detail"] == {"repositories": ["all/app"]}
        r = c.put("/api/v1/repositories/all/app/retention", json={"policy": {"keep_last": 1, "keep": ["[z-a"]}})
        assert r.status_code == 200  # a glob that matches nothing is still a valid pattern
        r = c.put("/api/v1/repositories/all/app/retention", json={"policy": {"keep_last": "x"}})
        assert r.status_code == 400
        doc = c.get("/api/v1/repositories/all/app/retention").json()
        assert doc["own"]["policy"]["keep_last"] == 1  # the refused ones changed nothing
        r = c.put("/api/v1/repositories/all/app/retention", json={"policy": {"consider": ["*"], "force": True}})
        assert r.status_code == 200 and len(r.json()["plan"]["remove"]) == 2
        out = cli(quiet_server, "retention", "run", "--dry-run", "--repository", "all/app")
        assert out.stdout.count("would remove all/app:") == 2
        c.put("/api/v1/repositories/all/app/retention", json={"policy": None})
        assert c.get("/api/v1/repositories/all/app/retention").json()["own"]["policy"] is None
        out = cli(quiet_server, "retention", "run", "--repository", "all/app")
        assert out.returncode == 0 and tag_digest(c, "all/app", "a") is not None


def test_a_namespace_policy_applies_and_a_repository_policy_wins(quiet_server: Server) -> None:
    with httpx.Client(base_url=quiet_server.url, timeout=30) as c:
        for repo in ("nsr/one", "nsr/two"):
            for t in ("t1", "t2", "t3"):
                push_image(c, repo, t, files={"x": (repo + t).encode()})
        r = c.put("/api/v1/namespaces/nsr/retention", json={"policy": {"keep_last": 1}})
        assert r.status_code == 200, r.text
        assert c.put("/api/v1/repositories/nsr/two/retention", json={"policy": {"keep_last": 2}}).status_code == 200
        doc = json.loads(cli(quiet_server, "retention", "run", "--dry-run", "--json").stdout)
        plans = {p["repository"]: p for p in doc["repositories"]}
        assert plans["nsr/one"]["policy_from"] == "namespace nsr"
        assert [x["tag"] for x in plans["nsr/one"]["remove"]] == ["t2", "t1"]
        assert plans["nsr/two"]["policy_from"] == "repository nsr/two"
        assert [x["tag"] for x in plans["nsr/two"]["remove"]] == ["t1"]
        c.put("/api/v1/namespaces/nsr/retention", json={"policy": None})
        c.put("/api/v1/repositories/nsr/two/retention", json={"policy": None})


# -- pure functions ----------------------------------------------------------------------------------------
def test_durations() -> None:
    assert [parse_duration(v) for v in ("90s", "30m", "12h", "2d", "3w")] == [90, 1800, 43200, 172800, 1814400]
    for bad in ("", "2", "1.5h", "1h30m", "-1d", "2 days", "9999999999w"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(172800) == "2d" and format_duration(90) == "90s" and format_duration(0) == "0s"
    assert load_config(environ={"HALLMARK_LIFECYCLE__TAG_EXPIRY_DEFAULT": "30d"}).lifecycle.tag_expiry_default == "30d"
    with pytest.raises(ConfigError, match="tag_expiry_default"):
        load_config(environ={"HALLMARK_LIFECYCLE__TAG_EXPIRY_DEFAULT": "30 days"})


def test_label_expiry_reads_both_labels_and_prefers_hallmarks() -> None:
    def cfg(labels: Any) -> bytes:
        return json.dumps({"config": {"Labels": labels}}).encode()

    found = label_expiry(cfg({"quay.expires-after": "3w", "hallmark.expires-after": "12h"}))
    assert found is not None and (found.label, found.seconds) == ("hallmark.expires-after", 43200)
    bad = label_expiry(cfg({"quay.expires-after": 5}))
    assert bad is not None and bad.seconds is None and bad.warning and "quay.expires-after ignored" in bad.warning
    assert label_expiry(cfg(None)) is None and label_expiry(b"not json") is None
    assert label_expiry(json.dumps({"config": "odd"}).encode()) is None


def test_retention_never_removes_an_approved_image_and_keeps_young_tags() -> None:
    now = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    rows = [(f"t{i}", f"sha256:{i}", now - dt.timedelta(days=i * 10)) for i in range(4)]
    policy = RetentionPolicy(keep_days=15)
    got = {d.tag: (d.keep, d.why) for d in decide(policy, rows, {"sha256:3"}, now)}
    assert got["t0"] == (True, "pushed within 15 days") and got["t1"] == (True, "pushed within 15 days")
    assert got["t2"] == (False, "pushed 20 days ago (more than 15)")
    assert got["t3"] == (True, "image approved in the catalog")
    assert not RetentionPolicy().keeps_something() and RetentionPolicy(consider=["pr-*"]).keeps_something()


def test_gc_selection_keeps_what_kept_manifests_use() -> None:
    now = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    old, recent = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    cutoff = now - dt.timedelta(days=14)
    tagged = {"idx2"}
    subjects: dict[str, str | None] = {
        "idx": None,
        "child": None,
        "shared": None,
        "idx2": None,
        "sbom": "idx",
        "young": None,
        "approved": None,
    }
    children = {"idx": ["child", "shared"], "idx2": ["shared"]}
    dropped = {"idx": old, "young": recent, "approved": old}
    going = manifests_to_collect("r", dropped, cutoff, (tagged, subjects, children), lambda r, d: d == "approved")
    assert going == {"idx", "child", "sbom"}  # shared stays for idx2; young is in the window

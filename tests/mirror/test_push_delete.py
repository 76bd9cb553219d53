"""Push mirrors with ``delete_remote`` against Debian's ``docker-registry``: retired images and tags or
manifests deleted here leave the remote, in queued runs; deprecated images and what someone else put
there stay; a remote that answers 404 (already gone) or refuses deletes (405, deletes not enabled) is
a recorded per-tag result, never a crash. Plus the field through the API, CLI, portal and migration."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import Server, free_port
from tests.mirror.synchelp import PASSWORD, USER, Source, image, start_source
from tests.mirror.synchelp import source as source

if TYPE_CHECKING:
    from hallmark.app import Hallmark

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
CREDS = {"insecure": True, "username": USER, "password": PASSWORD}


@pytest.fixture(scope="module")
def no_deletes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A second registry started without ``REGISTRY_STORAGE_DELETE_ENABLED``: every DELETE answers 405."""
    src = start_source(tmp_path_factory.mktemp("no-deletes"), delete=False)
    try:
        yield src
    finally:
        src.proc.terminate()
        src.proc.wait(10)


def remote_digest(src: Source, repo: str, ref: str) -> str | None:
    with src.client() as c:
        r = c.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    return r.headers["docker-content-digest"] if r.status_code == 200 else None


def open_hallmark(tmp_path: Path, db: str = "sqlite", request: pytest.FixtureRequest | None = None) -> Hallmark:
    from hallmark.app import Hallmark
    from hallmark.config import load_config

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    if db == "postgres":
        assert request is not None
        env["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"d{free_port()}")
    return Hallmark.open(load_config(environ=env))


def run_queued(hm: Hallmark) -> dict[str, Any]:
    """Claim the queued mirror job and run it as a worker does."""
    from hallmark.mirror.sync_jobs import KIND, run_now

    job = hm.pipeline.jobs.claim("w", [KIND])
    assert job is not None, "no mirror run was queued"
    try:
        return run_now(hm, int(job.payload["run"]))
    finally:
        hm.pipeline.jobs.done(job)


def delete_here(hm: Hallmark, repo: str, reference: str) -> None:
    """A DELETE through the registry service, on an event loop kept open until the registry listener
    (run on a pool thread) has queued the mirror's run."""
    from hallmark.mirror.sync_jobs import KIND

    async def go() -> None:
        await hm.registry.delete_manifest(repo, reference, "tester")
        deadline = time.monotonic() + 10
        while not hm.pipeline.jobs.pending([KIND]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the pool thread's future settles on this loop

    asyncio.run(go())


def tag_results(hm: Hallmark, run_id: int) -> dict[str, dict[str, Any]]:
    from hallmark.mirror.definitions import MirrorStore

    doc = MirrorStore(hm.meta, hm.config.data_path).run(run_id)
    assert doc is not None
    return {t["tag"]: t for t in doc["tags"]}


def local_images(hm: Hallmark, src: Source, src_repo: str, local: str) -> None:
    """Bring ``src_repo`` into ``local`` with a pull mirror: stored like pushes."""
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    store = MirrorStore(hm.meta, hm.config.data_path)
    pull = store.create(validate({"source": f"{src.host}/{src_repo}", "destination": local, **CREDS}), "t")
    result = run_now(hm, queue_run(hm, pull, "manual", enqueue=False)[0])
    assert result["state"] == "succeeded", result
    store.delete(pull.id)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_retired_and_deleted_images_leave_the_remote_and_nothing_else_does(
    db: str, source: Source, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hallmark.access.service import AccessService
    from hallmark.catalog.service import CatalogService
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, install, queue_due

    imgs = {t: image({"delete-remote": f"{db}-{t}"}) for t in ("v1", "v2", "v3", "dep", "v5")}
    src_repo, local, remote = f"src/del-{db}", f"app/del-{db}", f"pushed/del-{db}"
    source.push(src_repo, {**imgs, "alias": imgs["v1"]}, tmp_path)
    source.push(remote, {"v5": imgs["v5"]}, tmp_path)  # on the remote before the mirror: someone else's
    hm = open_hallmark(tmp_path, db, request)
    try:
        install(hm)  # the job handler and the registry listener, as `hallmark serve` installs them
        local_images(hm, source, src_repo, local)
        store = MirrorStore(hm.meta, hm.config.data_path)
        doc = {"direction": "push", "repository": local, "remote": f"{source.host}/{remote}", "delete_remote": True}
        push = store.create(validate(dict(doc, copy_referrers=False, **CREDS)), "t")
        assert push.delete_remote and push.to_json()["delete_remote"] is True

        monkeypatch.setattr(CatalogService, "gates", lambda self, repo, digest, force=False: [])
        catalog = CatalogService(hm.pipeline)
        for name in ("v1", "v2", "v3", "dep", "v5"):
            hm.pipeline.store.set_image(local, imgs[name].digest, status="done")
            catalog.promote(local, imgs[name].digest, "approved", "reviewer", "ok")
        first = run_queued(hm)  # the approvals queued one run
        assert first["state"] == "succeeded", first
        states = {t: r["state"] for t, r in tag_results(hm, first["run"]).items()}
        assert states == {
            "alias": "copied", "dep": "copied", "v1": "copied", "v2": "copied", "v3": "copied", "v5": "skipped",
        }  # fmt: skip
        assert remote_digest(source, remote, "v2") == imgs["v2"].digest

        # Deprecation warns, it does not withdraw: no run, and the remote keeps the image.
        catalog.promote(local, imgs["dep"].digest, "deprecated", "reviewer", "old", replacement=f"{local}:v1")
        assert hm.pipeline.jobs.pending([KIND]) == 0

        # Retirement queues a run that deletes the remote manifest by digest.
        catalog.promote(local, imgs["v2"].digest, "retired", "reviewer", "withdrawn")
        retired = run_queued(hm)
        assert (retired["state"], retired["deleted"], retired["failed"]) == ("succeeded", 1, 0), retired
        v2 = tag_results(hm, retired["run"])["v2"]
        assert (v2["action"], v2["state"], v2["digest"], v2["error"]) == ("delete", "deleted", imgs["v2"].digest, None)
        assert v2["note"] == "retired here: manifest deleted on the remote"
        assert remote_digest(source, remote, "v2") is None
        assert remote_digest(source, remote, imgs["v2"].digest) is None
        assert remote_digest(source, remote, "dep") == imgs["dep"].digest  # deprecated: still there

        # Retiring an image someone else put on the remote deletes nothing there.
        catalog.promote(local, imgs["v5"].digest, "retired", "reviewer", "withdrawn")
        other = run_queued(hm)
        assert other["state"] == "succeeded" and other["deleted"] == 0, other
        assert "v5" not in tag_results(hm, other["run"])
        assert remote_digest(source, remote, "v5") == imgs["v5"].digest

        # A tag deleted through the registry API: its listener queues the run (from a pool thread).
        delete_here(hm, local, "v3")
        deleted = run_queued(hm)
        assert deleted["deleted"] == 1, deleted
        assert tag_results(hm, deleted["run"])["v3"]["note"] == "tag deleted here: manifest deleted on the remote"
        assert remote_digest(source, remote, "v3") is None

        # A tag removed another way (retention, expiry) is found in the tag history by mirrors.schedule.
        # Its manifest is still pushed as v1: the remote must delete the tag alone, which the CNCF
        # registry cannot (400), so the tag stays, said so, and v1 is untouched.
        assert hm.meta.delete_tag(local, "alias", "lifecycle", "retention")
        assert [q["trigger"] for q in queue_due(hm)["queued"]] == ["deletion"]
        assert queue_due(hm)["queued"] == []  # the queued run will see it: not queued twice
        kept = run_queued(hm)
        assert kept["state"] == "succeeded" and kept["deleted"] == 0, kept
        alias = tag_results(hm, kept["run"])["alias"]
        assert (alias["action"], alias["state"]) == ("delete", "skipped")
        assert "cannot delete a tag alone (it answered 400 DIGEST_INVALID)" in alias["note"]
        assert "would also remove v1" in alias["note"]
        assert remote_digest(source, remote, "v1") == imgs["v1"].digest

        # Someone deletes the manifest on the remote; then v1 is deleted here (by digest): both tags
        # the mirror pushed for it are recorded as already gone, a success.
        with source.client() as c:
            assert c.delete(f"/v2/{remote}/manifests/{imgs['v1'].digest}").status_code == 202
        delete_here(hm, local, imgs["v1"].digest)
        gone = run_queued(hm)
        assert (gone["state"], gone["deleted"], gone["failed"]) == ("succeeded", 2, 0), gone
        results = tag_results(hm, gone["run"])
        assert {results[t]["note"] for t in ("v1", "alias")} == {"tag deleted here: already gone from the remote"}, (
            results
        )

        # Audited per tag removed by a request of the mirror (not the ones already gone).
        audit = AccessService.for_metadata(hm.config, hm.meta).audit
        entries = audit.query(action="mirror.delete_remote", repo=local)
        assert sorted(e["detail"]["tag"] for e in entries) == ["v2", "v3"]
        assert {e["actor"] for e in entries} == {f"mirror:{push.name}"}
        assert {e["detail"]["reason"] for e in entries} == {"retired here", "tag deleted here"}
    finally:
        hm.close()


def test_retiring_one_platform_image_withdraws_the_index_tag(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages are per platform image: an index tag leaves the remote once an image it carries is retired."""
    from hallmark.catalog.service import CatalogService
    from hallmark.mirror.definitions import MirrorStore, validate

    amd, arm = image({"withdraw": "amd"}, "amd64"), image({"withdraw": "arm"}, "arm64")
    source.push("src/multi-del", {"a": amd, "b": arm}, tmp_path, {"a": "linux/amd64", "b": "linux/arm64"})
    hm = open_hallmark(tmp_path)
    try:
        local_images(hm, source, "src/multi-del", "app/multi-del")
        index = hm.meta.get_manifest("app/multi-del", "multi", False)
        assert index is not None
        store = MirrorStore(hm.meta, hm.config.data_path)
        doc = {"direction": "push", "repository": "app/multi-del", "remote": f"{source.host}/pushed/multi-del"}
        store.create(validate(dict(doc, delete_remote=True, **CREDS)), "t")
        monkeypatch.setattr(CatalogService, "gates", lambda self, repo, digest, force=False: [])
        catalog = CatalogService(hm.pipeline)
        for img in (amd, arm):
            hm.pipeline.store.set_image("app/multi-del", img.digest, status="done")
            catalog.promote("app/multi-del", img.digest, "approved", "reviewer", "ok")
        assert run_queued(hm)["copied"] == 1
        assert remote_digest(source, "pushed/multi-del", "multi") == index.digest

        catalog.promote("app/multi-del", arm.digest, "retired", "reviewer", "withdrawn")
        withdrawn = run_queued(hm)
        assert withdrawn["deleted"] == 1, withdrawn
        assert tag_results(hm, withdrawn["run"])["multi"]["note"] == (
            "an image of the index retired here: manifest deleted on the remote"
        )
        assert remote_digest(source, "pushed/multi-del", "multi") is None
    finally:
        hm.close()


def test_a_remote_that_refuses_deletes_is_a_recorded_error(
    no_deletes: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hallmark.catalog.service import CatalogService
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import run_now

    img = image({"refused": "delete"})
    no_deletes.push("src/refuse", {"v1": img}, tmp_path)
    hm = open_hallmark(tmp_path)
    try:
        local_images(hm, no_deletes, "src/refuse", "app/refuse")
        store = MirrorStore(hm.meta, hm.config.data_path)
        doc = {"direction": "push", "repository": "app/refuse", "remote": f"{no_deletes.host}/pushed/refuse"}
        store.create(validate(dict(doc, delete_remote=True, **CREDS)), "t")
        monkeypatch.setattr(CatalogService, "gates", lambda self, repo, digest, force=False: [])
        hm.pipeline.store.set_image("app/refuse", img.digest, status="done")
        catalog = CatalogService(hm.pipeline)
        catalog.promote("app/refuse", img.digest, "approved", "reviewer", "ok")
        assert run_queued(hm)["copied"] == 1

        catalog.promote("app/refuse", img.digest, "retired", "reviewer", "withdrawn")
        refused = run_queued(hm)
        assert (refused["state"], refused["failed"], refused["error"]) == ("retrying", 1, None), refused
        v1 = tag_results(hm, refused["run"])["v1"]
        assert (v1["action"], v1["state"], v1["note"]) == ("delete", "failed", "retired here")
        assert v1["error"] == "the remote does not allow deletes (405 UNSUPPORTED)"
        assert remote_digest(no_deletes, "pushed/refuse", "v1") == img.digest
        # Retried like failed pushes; after the last attempt the run ends failed, still a result.
        for _ in range(2):
            final = run_now(hm, refused["run"])
        assert (final["state"], final["attempt"], final["failed"]) == ("failed", 3, 1), final
    finally:
        hm.close()


def test_delete_remote_through_the_api_cli_and_portal(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hallmark.cli import app
    from hallmark.mirror.definitions import Mirror, TagFilter
    from hallmark.portal.admin_mirrors import mirror_view
    from hallmark.portal.session import environment

    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            body = {"direction": "push", "repository": "team/app", "remote": "partner.example/app"}
            r = c.post("/api/v1/mirrors", json=dict(body, delete_remote=True))
            assert r.status_code == 201, r.text
            mid = r.json()["id"]
            assert r.json()["delete_remote"] is True
            assert c.get(f"/api/v1/mirrors/{mid}").json()["delete_remote"] is True
            assert [m["delete_remote"] for m in c.get("/api/v1/mirrors").json()["mirrors"]] == [True]
            r = c.patch(f"/api/v1/mirrors/{mid}", json={"delete_remote": False})
            assert r.status_code == 200 and r.json()["delete_remote"] is False, r.text
            r = c.patch(f"/api/v1/mirrors/{mid}", json={"delete_remote": "yes"})
            assert r.status_code == 400 and "delete_remote must be true or false" in r.text
            default = c.post("/api/v1/mirrors", json=dict(body, name="plain"))
            assert default.status_code == 201 and default.json()["delete_remote"] is False
            pull = {"source": "partner.example/app", "destination": "team/in", "delete_remote": True}
            r = c.post("/api/v1/mirrors", json=pull)
            assert r.status_code == 400 and "delete_remote applies to push mirrors only" in r.text
            r = c.patch(f"/api/v1/mirrors/{mid}", json={"delete_remote": True})
            assert r.status_code == 200 and r.json()["delete_remote"] is True
    finally:
        srv.stop()

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "cli-data")}
    runner = CliRunner()
    args = ["mirror", "add", "--push", "--delete-remote", "app/web", "registry.example:5000/team/web"]
    res = runner.invoke(app, [*args, "--json"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["delete_remote"] is True
    res = runner.invoke(app, ["mirror", "status", "push-app-web"], env=env)
    assert "(push, delete remote)" in res.output, res.output
    res = runner.invoke(app, ["mirror", "add", "--delete-remote", "registry.example/x", "app/x"], env=env)
    assert res.exit_code == 2 and "delete_remote applies to push mirrors only" in res.output

    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    m = Mirror(
        7, "out", "remote.example", "prod/app", "local/app", insecure=False, username=None, has_password=False,
        tags=TagFilter.parse(None, None), platforms=None, interval_seconds=None, cron=None, copy_referrers=True,
        robot=None, timeout_seconds=60.0, enabled=True, next_run_at=None, created_by="admin", created_at=now,
        direction="push", delete_remote=True,
    )  # fmt: skip
    run = {
        "id": 3, "trigger": "retirement", "state": "succeeded", "attempt": 1, "copied": 0, "skipped": 1,
        "failed": 0, "deleted": 1, "bytes": 0, "error": None, "created_at": now, "seconds": 0.2,
        "next_retry_at": None,
    }  # fmt: skip
    tag = {
        "tag": "v2", "action": "delete", "state": "deleted", "source_digest": "sha256:" + "a" * 64,
        "digest": "sha256:" + "a" * 64, "bytes": 0, "blobs_copied": 0, "blobs_skipped": 0, "referrers": 0,
        "attempts": 1, "error": None, "note": "retired here: manifest deleted on the remote",
    }  # fmt: skip
    base = {"user": "admin", "access": True, "csrf": "t" * 43, "path": "/admin/mirrors/7"}
    page = (
        environment()
        .get_template("mirror.html")
        .render(**base, mirror=mirror_view(m), runs=[run], detail=dict(run, tags=[tag]), queued=None)
    )
    assert "what it pushed is deleted from the remote once retired or deleted here" in page
    assert "<th>Deleted</th>" in page and "(remote delete)" in page
    assert "retired here: manifest deleted on the remote" in page


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_migration_0015_keeps_existing_mirrors_and_runs(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Mirrors, runs and tags from before 0015 read back with delete_remote off, 0 deleted, action copy."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import select, text

    from hallmark.metadata.db import MIGRATIONS, make_engine
    from hallmark.mirror.definitions import run_json, tag_json
    from hallmark.mirror.tables import mirror_run_tags, mirror_runs, mirrors

    if db == "postgres":
        url = request.getfixturevalue("postgres").create_db(f"g{free_port()}")
    else:
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    engine = make_engine(url, 2)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def to(revision: str, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)

    try:
        to("0014")
        at = "2026-12-01 00:00:00"
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO mirrors (id, name, direction, source_registry, source_repository, destination,"
                    " insecure, tag_filters, copy_referrers, timeout_seconds, enabled, created_by, created_at,"
                    " updated_at) VALUES (1, 'old', 'push', 'r.example', 'a/b', 'c/d', false, '{}', true, 60,"
                    " true, 't', :at, :at)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO mirror_runs (id, mirror_id, trigger, state, attempt, copied, skipped, failed,"
                    " bytes, blobs_copied, blobs_skipped, created_at) VALUES (1, 1, 'manual', 'succeeded', 1,"
                    " 1, 0, 0, 10, 1, 0, :at)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO mirror_run_tags (id, run_id, tag, state, bytes, blobs_copied, blobs_skipped,"
                    " referrers, attempts, updated_at) VALUES (1, 1, 'v1', 'copied', 10, 1, 0, 0, 1, :at)"
                ),
                {"at": at},
            )
        to("head")
        with engine.connect() as conn:
            assert conn.execute(select(mirrors.c.delete_remote)).scalar() is False
            run = run_json(dict(conn.execute(select(mirror_runs)).mappings().one()))
            tag = tag_json(dict(conn.execute(select(mirror_run_tags)).mappings().one()))
        assert (run["copied"], run["deleted"]) == (1, 0)
        assert (tag["action"], tag["state"], tag["note"]) == ("copy", "copied", None)
        to("0014", down=True)
        with engine.connect() as conn:
            assert "delete_remote" not in conn.execute(text("SELECT * FROM mirrors")).keys()
        to("head")
    finally:
        engine.dispose()

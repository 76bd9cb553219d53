"""Mirror runs in process (as a worker runs them) against Debian's ``docker-registry``: resuming after a
kill, retries, the robot identity, timeouts, oversize manifests, a tag moved mid-run, scheduling, and a
second Hallmark (Bearer tokens, referrers API) as the source."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallmark.metadata import secrets as instance_secrets
from tests.conftest import Server, free_port
from tests.index.imagebuilder import Image, Layer, build_image, sha256
from tests.mirror.synchelp import PASSWORD, SBOM_TYPE, USER, Source, image
from tests.mirror.synchelp import source as source


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_killed_run_resumes_and_failures_are_queued_with_backoff(
    db: str, source: Source, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """In process: a run interrupted after its first tag finishes the rest when run again."""
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror import sync
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, queue_run, run_now

    source.push(f"src/resume-{db}", {f"t{i}": image({"n": db + str(i)}) for i in range(3)}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    if db == "postgres":
        env["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"m{free_port()}")
    hm = Hallmark.open(load_config(environ=env))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate(
                {"source": f"{source.host}/src/resume-{db}", "destination": "r/x", "insecure": True,
                 "username": USER, "password": PASSWORD}
            ),
            "test",
        )  # fmt: skip
        run_id, _ = queue_run(hm, m, "manual", enqueue=False)
        original = sync.copy_tag
        calls = []

        def dies_on_second(copier: Any, tag: str, all_tags: set[str]) -> Any:
            calls.append(tag)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the worker is killed mid-run
            return original(copier, tag, all_tags)

        sync.copy_tag = dies_on_second
        try:
            with pytest.raises(KeyboardInterrupt):
                run_now(hm, run_id)
        finally:
            sync.copy_tag = original
        half = store.run(run_id)
        assert half is not None and half["state"] == "running"
        assert [t["state"] for t in half["tags"]] == ["copied", "pending", "pending"]
        result = run_now(hm, run_id)  # the job claimed again after its lease expired
        assert result["state"] == "succeeded" and result["copied"] == 3
        done = store.run(run_id)
        assert done is not None and [t["attempts"] for t in done["tags"]] == [1, 1, 1]
        # Nothing changed: one request per tag, plus the tag list and one referrers API probe (404 here).
        again = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert (again["skipped"], again["copied"], again["requests"]) == (3, 0, 1 + 3 + 1)

        # A failing run is queued again, later (backoff), for the tags that failed.
        m2 = store.create(
            validate({"source": f"{source.host}/src/nowhere", "destination": "r/y", "insecure": True}), "t"
        )
        run2, _ = queue_run(hm, m2, "manual", enqueue=False)
        failed = run_now(hm, run2)
        assert failed["state"] == "retrying" and "src/nowhere" in failed["error"]
        assert hm.pipeline.jobs.pending([KIND]) == 1  # queued again...
        assert hm.pipeline.jobs.claim("w", [KIND]) is None  # ...after its backoff
    finally:
        hm.close()


def test_the_mirror_pushes_as_its_robot_and_only_where_it_may(source: Source, tmp_path: Path) -> None:
    """Access control on: stored tags and audit entries name the robot; a robot without push on the
    destination copies nothing; blobs of repositories the robot cannot read are fetched, not linked."""
    from sqlalchemy import select

    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.lifecycle.tables import tag_history
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    img = image({"robot": "made"})
    source.push("src/robot", {"v1": img}, tmp_path)
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        assert hm.config.access.enabled
        admin = AccessService.for_metadata(hm.config, hm.meta)  # hm.access stays unset, as in `hallmark worker`
        admin.create_robot("admin", "mirror-bot", ["repository:mirrors/*:pull,push"])
        # The same layer already stored in a repository the robot cannot read.
        private = hm.blobs.put(img.blobs[img.layer_digests[0]])
        hm.meta.link_blob("private/x", private[0], private[1])
        store = MirrorStore(hm.meta, hm.config.data_path)
        base = {"source": f"{source.host}/src/robot", "insecure": True, "username": USER, "password": PASSWORD}
        refused = store.create(validate(dict(base, destination="elsewhere/x", robot="mirror-bot")), "admin")
        result = run_now(hm, queue_run(hm, refused, "manual", enqueue=False)[0])
        assert result["state"] == "failed" and "may not push to elsewhere/x" in result["error"]
        assert hm.meta.get_manifest("elsewhere/x", "v1", False) is None

        m = store.create(validate(dict(base, destination="mirrors/x", robot="mirror-bot")), "admin")
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert result["state"] == "succeeded" and result["copied"] == 1, result
        assert result["blobs_copied"] == 2 and result["blobs_skipped"] == 0  # the private copy was not linked
        with hm.meta.engine.connect() as conn:
            actors = conn.execute(select(tag_history.c.actor).where(tag_history.c.repo_name == "mirrors/x")).scalars()
            assert list(actors) == ["mirror-bot"]
        pushes = admin.audit.query(action="push", repo="mirrors/x")
        assert pushes and {p["actor"] for p in pushes} == {"mirror-bot"}
    finally:
        hm.close()


def test_a_slow_source_and_an_oversize_manifest_are_errors_not_hangs(source: Source, tmp_path: Path) -> None:
    import socket

    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    def layered(tag: str) -> Image:  # ten layers: a manifest over 1024 bytes
        return build_image([(Layer().file(f"f{i}", tag).tar_bytes(), "gzip") for i in range(10)])

    source.push("src/big", {"v1": layered("1"), "v2": layered("2")}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), "HALLMARK_REGISTRY__MAX_MANIFEST_BYTES": "1024"}
    hm = Hallmark.open(load_config(environ=env))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        slow = store.create(
            validate({"source": f"127.0.0.1:{silent.getsockname()[1]}/x", "destination": "s/x", "insecure": True,
                      "timeout_seconds": 1}),
            "t",
        )  # fmt: skip
        result = run_now(hm, queue_run(hm, slow, "manual", enqueue=False)[0])
        assert result["state"] == "retrying" and "timed out" in result["error"].lower(), result
        big = store.create(
            validate({"source": f"{source.host}/src/big", "destination": "b/x", "insecure": True,
                      "username": USER, "password": PASSWORD}),
            "t",
        )  # fmt: skip
        result = run_now(hm, queue_run(hm, big, "manual", enqueue=False)[0])
        run = store.run(result["run"])
        assert run is not None and [t["state"] for t in run["tags"]] == ["failed", "failed"]
        assert all("larger than 1024 bytes" in t["error"] for t in run["tags"])
        assert hm.meta.get_manifest("b/x", "v1", False) is None
    finally:
        silent.close()
        hm.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_due_mirrors_are_queued_once(db: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The periodic job queues a run of each due mirror; a second pass (another replica) queues nothing."""
    import datetime as dt

    from sqlalchemy import update

    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorInputError, MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, queue_due
    from hallmark.mirror.tables import mirrors

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    if db == "postgres":
        env["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"m{free_port()}")
    hm = Hallmark.open(load_config(environ=env))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        due = store.create(validate({"source": "h.example/x", "destination": "d/x", "interval_seconds": 600}), "t")
        store.create(validate({"source": "h.example/y", "destination": "d/y"}), "t")  # manual only
        now = dt.datetime.now(dt.UTC)
        assert queue_due(hm, now)["queued"] == []  # not due yet
        with hm.meta.transaction() as conn:
            conn.execute(
                update(mirrors).where(mirrors.c.id == due.id).values(next_run_at=now - dt.timedelta(seconds=1))
            )
        assert [q["mirror"] for q in queue_due(hm, now)["queued"]] == ["d-x"]
        assert queue_due(hm, now)["queued"] == []
        assert hm.pipeline.jobs.pending([KIND]) == 1
        moved = store.get(due.id)
        assert moved is not None and moved.next_run_at is not None
        assert moved.next_run_at.replace(tzinfo=dt.UTC) >= now + dt.timedelta(seconds=599)
        # Changes (PATCH): the password is resealed, kept when not given; name and destination stay.
        changed = store.update(moved, {"username": "u", "password": "pw-1"})
        assert store.credentials(changed) == ("u", "pw-1") and changed.has_password
        kept = store.update(changed, {"enabled": False, "tags": {"include": ["v*"]}})
        assert store.credentials(kept) == ("u", "pw-1") and not kept.enabled and kept.tags.include == ("v*",)
        cron = store.update(kept, {"schedule": {"cron": "0 3 * * *"}})
        assert (cron.cron, cron.interval_seconds) == ("0 3 * * *", None) and cron.next_run_at != kept.next_run_at
        with pytest.raises(MirrorInputError, match="cannot be changed"):
            store.update(cron, {"destination": "elsewhere/x"})
        assert store.credentials(store.update(cron, {"password": None})) == ("u", "")
    finally:
        hm.close()


def test_a_tag_moved_upstream_during_the_run_stores_one_consistent_version(source: Source, tmp_path: Path) -> None:
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror import sync
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    first, second = image({"v": "first"}), image({"v": "second"})
    source.push("src/moving", {"v1": first}, tmp_path)
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    original = sync.Source.digest_of

    def then_moved(self: sync.Source, tag: str) -> str:
        digest = original(self, tag)
        source.push("src/moving", {"v1": second}, tmp_path)  # the tag moves right after it was read
        return digest

    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate({"source": f"{source.host}/src/moving", "destination": "mv/x", "insecure": True,
                      "username": USER, "password": PASSWORD, "copy_referrers": False}),
            "t",
        )  # fmt: skip
        sync.Source.digest_of = then_moved  # type: ignore[method-assign]
        try:
            result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        finally:
            sync.Source.digest_of = original  # type: ignore[method-assign]
        assert result["state"] == "succeeded" and result["copied"] == 1
        stored = hm.meta.get_manifest("mv/x", "v1", False)
        assert stored is not None and stored.digest == first.digest and stored.content == first.manifest
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])  # the next run sees the move
        stored = hm.meta.get_manifest("mv/x", "v1", False)
        assert result["copied"] == 1 and stored is not None and stored.digest == second.digest
        # A tag listed, then deleted upstream before it is read: skipped and said so, not a failure to retry.
        listed = sync.Source.tags
        sync.Source.tags = lambda self: [*listed(self), "deleted-meanwhile"]  # type: ignore[method-assign]
        try:
            result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        finally:
            sync.Source.tags = listed  # type: ignore[method-assign]
        run = store.run(result["run"])
        assert result["state"] == "succeeded" and run is not None
        gone = {t["tag"]: t for t in run["tags"]}["deleted-meanwhile"]
        assert gone["state"] == "skipped" and "no longer in the source" in gone["error"]
    finally:
        hm.close()


def test_mirror_from_a_hallmark_with_bearer_tokens_and_the_referrers_api(tmp_path: Path) -> None:
    """The source is a second Hallmark (access control on: Bearer-token challenge, referrers API)."""
    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine, migrate
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now
    from tests.ocihelp import push_blob, push_manifest

    data = tmp_path / "src-data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "carol", "carol-Secret-123456")
    svc.grant("test", "principal", "carol", "namespace", "team", "write")
    svc.audit.flush()
    engine.dispose()
    src = Server(data, env={"HALLMARK_PIPELINE__ENABLED": "false"}, access=True).start()
    hm = None
    try:
        img = image({"from": "hallmark"})
        body = b'{"spdxVersion": "SPDX-2.3"}'
        with httpx.Client(base_url=src.url, auth=("carol", "carol-Secret-123456"), timeout=30) as c:
            for blob in img.blobs.values():
                if blob != img.manifest:
                    push_blob(c, "team/app", blob)
            assert push_manifest(c, "team/app", "v1", img.manifest).status_code == 201
            push_blob(c, "team/app", body)
            push_blob(c, "team/app", b"{}")
            artifact = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": SBOM_TYPE,
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
                    "layers": [{"mediaType": SBOM_TYPE, "digest": sha256(body), "size": len(body)}],
                    "subject": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": img.digest,
                        "size": len(img.manifest),
                    },
                }
            ).encode()
            assert push_manifest(c, "team/app", sha256(artifact), artifact).status_code == 201
        hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
        store = MirrorStore(hm.meta, hm.config.data_path)
        base = {"source": f"http://{src.host}/team/app", "destination": "copy/app"}
        m = store.create(validate(dict(base, username="carol", password="carol-Secret-123456")), "t")
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert result["state"] == "succeeded" and result["copied"] == 1, result
        stored = hm.meta.get_manifest("copy/app", "v1", False)
        assert stored is not None and stored.digest == img.digest
        refs = hm.meta.referrers("copy/app", img.digest, None, 100, None)
        assert [r.digest for r in refs] == [sha256(artifact)]
        again = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert (again["skipped"], again["requests"]) == (1, 1 + 1 + 1)  # tag list, HEAD, referrers
        # A data folder whose mirror key changed cannot open the password: said so, not retried.
        saved = instance_secrets.read(hm.meta, instance_secrets.MIRROR_KEY)
        assert saved is not None
        instance_secrets.replace(hm.meta, instance_secrets.MIRROR_KEY, base64.b64encode(bytes(32)).decode())
        unsealed = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        instance_secrets.replace(hm.meta, instance_secrets.MIRROR_KEY, saved)
        assert unsealed["state"] == "failed" and "cannot be unsealed" in unsealed["error"]
        # Wrong password: the token endpoint refuses, the run says so.
        bad = store.create(validate(dict(base, destination="copy/bad", username="carol", password="nope")), "t")
        failed = run_now(hm, queue_run(hm, bad, "manual", enqueue=False)[0])
        assert "refused the credentials" in failed["error"] and "nope" not in failed["error"]
    finally:
        if hm is not None:
            hm.close()
        src.stop()


def test_a_trickling_blob_hits_the_body_deadline(tmp_path: Path) -> None:
    """Each read arrives within the timeout, but the whole body is far too slow: the tag fails, nothing stored."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    layer = b"x" * 40
    img = build_image([(layer, None)])
    layer_digest = img.layer_digests[0]

    class Upstream(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json", digest: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/tags/list"):
                self._send(200, json.dumps({"name": "slow/app", "tags": ["v1"]}).encode())
            elif "/manifests/" in path:
                ctype = "application/vnd.oci.image.manifest.v1+json"
                self._send(200, img.manifest, ctype, img.digest)
            elif path.endswith(layer_digest):
                self.send_response(200)
                self.send_header("Content-Length", str(len(layer)))
                self.end_headers()
                try:
                    for b in layer:  # one byte every 0.25 s: each read is quick, the body takes 10 s
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.25)
                except OSError:
                    pass
            elif "/blobs/" in path:
                self._send(200, img.config)
            else:
                self._send(404, b"{}")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate({"source": f"http://127.0.0.1:{httpd.server_port}/slow/app", "destination": "slow/app",
                      "timeout_seconds": 1}),
            "t",
        )  # fmt: skip
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        run = store.run(result["run"])
        assert run is not None and run["tags"][0]["state"] == "failed"
        assert "slower than" in run["tags"][0]["error"], run["tags"][0]
        assert hm.blobs.stat(layer_digest) is None and hm.meta.get_manifest("slow/app", "v1", False) is None
    finally:
        httpd.shutdown()
        hm.close()

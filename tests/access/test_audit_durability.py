"""Security-relevant audit entries are durable before the response: ``kill -9`` loses none.

A real ``hallmark serve`` takes concurrent pushes and is SIGKILLed mid-way. After a restart
every manifest acknowledged with 201 must be readable (with its blobs) and must have its
``push`` entry in an intact audit chain. The flush interval is set to its maximum so that a
log which only queues entries in memory loses them all.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from hallmark.access.audit import is_durable
from hallmark.access.service import AccessService
from tests.access.conftest import access_service
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import image, push_blob, push_manifest, sha256, tar_layer

WORKERS = 20
PUSHES_PER_WORKER = 8
KILL_AFTER = 40  # acknowledged manifests before SIGKILL (of at most WORKERS * PUSHES_PER_WORKER)


@dataclass(frozen=True)
class Pushed:
    repo: str
    digest: str
    blobs: tuple[tuple[str, bytes], ...]


@pytest.fixture
def killable(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    data = tmp_path / "data"
    data.mkdir()
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"kill{free_port()}")
    env = {"HALLMARK_PIPELINE__ENABLED": "false", "HALLMARK_ACCESS__AUDIT_FLUSH_INTERVAL_SECONDS": "60"}
    srv = Server(data, db_url, env=env, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def _push_until_killed(srv: Server, auth: tuple[str, str]) -> list[Pushed]:
    """Push from WORKERS threads; SIGKILL the server once KILL_AFTER manifests got 201."""
    acked: list[Pushed] = []
    lock = threading.Lock()
    enough = threading.Event()

    def worker(w: int) -> None:
        with httpx.Client(base_url=srv.url, auth=auth, timeout=60) as c:
            for i in range(PUSHES_PER_WORKER):
                layer = tar_layer({f"w{w}/i{i}": f"worker {w} push {i}".encode() * 50})
                config, manifest = image([layer], {"created": f"w{w}-i{i}"})
                repo = f"kill/w{w}"
                try:
                    push_blob(c, repo, config)
                    push_blob(c, repo, layer)
                    r = push_manifest(c, repo, f"v{i}", manifest)
                except (httpx.HTTPError, AssertionError):
                    return  # the server is gone
                if r.status_code != 201:
                    return
                blobs = ((sha256(config), config), (sha256(layer), layer))
                with lock:
                    acked.append(Pushed(repo, r.headers["Docker-Content-Digest"], blobs))
                    if len(acked) >= KILL_AFTER:
                        enough.set()
        enough.set()  # everything pushed before the threshold: still kill, the checks stay valid

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    enough.wait(300)
    assert srv.proc is not None
    srv.proc.kill()
    srv.proc.wait()
    for t in threads:
        t.join()
    with lock:
        return list(acked)


def test_acknowledged_pushes_survive_kill_9(killable: Server) -> None:
    password = (killable.data_dir / "initial-admin-password").read_text().strip()
    auth = ("admin", password)
    acked = _push_until_killed(killable, auth)
    assert len(acked) >= KILL_AFTER
    killable.start()
    with httpx.Client(base_url=killable.url, auth=auth, timeout=60) as c:
        for p in acked:
            r = c.get(f"/v2/{p.repo}/manifests/{p.digest}")
            assert r.status_code == 200 and sha256(r.content) == p.digest, (p.repo, p.digest, r.status_code)
            for digest, content in p.blobs:
                r = c.get(f"/v2/{p.repo}/blobs/{digest}")
                assert r.status_code == 200 and r.content == content and sha256(r.content) == digest

        entries = c.get("/api/v1/audit", params={"action": "push", "limit": "10000"}).json()["entries"]
        logged = {(e["repository"], e["digest"]) for e in entries if e["result"] == "allowed"}
        missing = [(p.repo, p.digest) for p in acked if (p.repo, p.digest) not in logged]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged pushes have no audit entry"

        verify = c.get("/api/v1/audit/verify").json()
        assert verify["ok"] is True, verify


# -- the AuditLog itself --------------------------------------------------------------------------
@pytest.fixture
def access(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AccessService]:
    yield from access_service(backend, tmp_path, request, {"HALLMARK_ACCESS__AUDIT_FLUSH_INTERVAL_SECONDS": "60"})


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the other threads never got there"
        time.sleep(0.01)


def _actions(svc: AccessService) -> list[str]:
    return [r.action for r in svc.store.query_audit()]


def test_durable_entry_is_committed_with_everything_queued_before_it(access: AccessService) -> None:
    log = access.audit
    log.record("bob", "pull", "app", "sha256:" + "1" * 64)
    log.record("bob", "login")
    assert _actions(access) == [] and log.pending == 2  # reads stay batched
    log.record("alice", "push", "app", "sha256:" + "2" * 64)
    assert _actions(access) == ["pull", "login", "push"] and log.pending == 0
    access.create_team("ops", "builders")  # service calls are durable too
    assert _actions(access)[-1] == "team.create"
    assert log.verify().ok


def test_security_actions_are_durable_and_reads_are_not() -> None:
    for action in ("push", "delete", "untag", "blob.delete", "user.create", "user.roles", "permission.grant"):
        assert is_durable(action), action
    for action in ("token.create", "token.revoke", "promote", "sign", "vex.upload", "gc", "repository.visibility"):
        assert is_durable(action), action
    for action in ("pull", "login", "token.issue", "rescan"):
        assert not is_durable(action), action


def test_failed_durable_write_raises_and_keeps_the_entry(
    access: AccessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = access.audit
    real = access.store.append_audit

    def down(entries: Any, chain: Any) -> int:
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(access.store, "append_audit", down)
    log.record("bob", "pull", "app")
    with pytest.raises(OperationalError):
        log.record("alice", "push", "app", "sha256:" + "3" * 64)
    assert log.pending == 2
    monkeypatch.setattr(access.store, "append_audit", real)
    log.record("alice", "delete", "app", "sha256:" + "3" * 64)
    assert _actions(access) == ["pull", "push", "delete"] and log.verify().ok


def test_concurrent_durable_records_share_one_flush(access: AccessService, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one commit runs, the callers that queue behind it are written together by the next."""
    log = access.audit
    real = access.store.append_audit
    calls: list[int] = []
    release = threading.Event()

    def slow_first(entries: Any, chain: Any) -> int:
        calls.append(len(entries))
        if len(calls) == 1:
            release.wait(60)
        return real(entries, chain)

    monkeypatch.setattr(access.store, "append_audit", slow_first)
    threads = [
        threading.Thread(target=log.record, args=("ci", "push", f"app/{i}", f"sha256:{i:064x}")) for i in range(6)
    ]
    threads[0].start()
    _wait_until(lambda: calls)
    for t in threads[1:]:
        t.start()
    _wait_until(lambda: log.pending == 5)
    release.set()
    for t in threads:
        t.join()
    assert calls == [1, 5]
    assert sorted(r.repo or "" for r in access.store.query_audit()) == [f"app/{i}" for i in range(6)]
    assert log.verify().ok


def test_record_durable_commits_before_it_returns(access: AccessService) -> None:
    log = access.audit

    async def pushes() -> None:
        await log.record_durable("bob", "pull", "app")
        assert log.pending == 1
        await asyncio.gather(*(log.record_durable("ci", "push", f"app/{i}", f"sha256:{i:064x}") for i in range(10)))

    asyncio.run(pushes())
    assert log.pending == 0
    assert _actions(access) == ["pull"] + ["push"] * 10 and log.verify().ok

"""The audit hash chain (SQLite and PostgreSQL) and the access CLI commands."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from hallmark.access.service import AccessService
from hallmark.access.tables import audit_log
from hallmark.metadata.db import make_engine
from tests.access.conftest import access_service


@pytest.fixture
def access(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AccessService]:
    yield from access_service(backend, tmp_path, request)


def _fill(svc: AccessService, n: int) -> None:
    for i in range(n):
        svc.audit.record(f"user{i % 3}", "push", f"repo/{i}", f"sha256:{i:064x}", "allowed", "10.0.0.1", {"i": i})
    svc.audit.flush()


def test_chain_verifies_and_detects_tampering(access: AccessService) -> None:
    _fill(access, 10)
    res = access.audit.verify()
    assert res.ok and res.checked == 10 and res.head_hash
    rows = access.audit.query(actor="user1")
    assert [r["repository"] for r in rows] == ["repo/1", "repo/4", "repo/7"]
    assert rows[0]["detail"] == {"i": 1} and rows[0]["client_addr"] == "10.0.0.1"
    with access.store.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(result="denied"))
    res = access.audit.verify()
    assert not res.ok and res.first_bad_seq == 4 and "hash" in (res.reason or "")


def test_chain_detects_deleted_and_rehashed_rows(access: AccessService) -> None:
    _fill(access, 6)
    with access.store.engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
    res = access.audit.verify()
    assert not res.ok and res.first_bad_seq == 4
    # Rewriting a row and its own hash still breaks the link from the next row.
    _fill(access, 0)
    with access.store.engine.begin() as conn:
        conn.execute(delete(audit_log))
    _fill(access, 4)
    from hallmark.access.audit import entry_hash

    row = access.store.query_audit(after_seq=1, limit=1)[0]
    forged = {
        "ts": row.ts,
        "actor": "mallory",
        "action": row.action,
        "repo": row.repo,
        "digest": row.digest,
        "result": row.result,
        "client_addr": row.client_addr,
        "detail": row.detail,
    }
    with access.store.engine.begin() as conn:
        conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == row.seq)
            .values(actor="mallory", hash=entry_hash(row.prev_hash, row.seq, forged))
        )
    res = access.audit.verify()
    assert not res.ok and res.first_bad_seq == row.seq + 1


def test_prune_keeps_chain_verifiable(access: AccessService) -> None:
    _fill(access, 8)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    assert access.audit.prune(5, now=later) == 7  # the newest entry always stays
    res = access.audit.verify()
    assert res.ok and res.checked == 1
    _fill(access, 3)
    assert access.audit.verify().ok
    assert [r.seq for r in access.store.query_audit()] == [8, 9, 10, 11]


def test_concurrent_writers_share_one_chain(access: AccessService) -> None:
    other = AccessService(access.config, access.store.engine)  # e.g. a second worker process

    def work(svc: AccessService) -> None:
        for _ in range(5):
            _fill(svc, 10)

    threads = [threading.Thread(target=work, args=(s,)) for s in (access, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = access.audit.verify()
    assert res.ok and res.checked == 100


# -- CLI ------------------------------------------------------------------------------------------
@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def hallmark(data: Path, *args: str, stdin: str | None = None, check: bool = True) -> Result:
    """Run the real CLI in-process (same command objects as ``python -m hallmark``, without the start-up cost)."""
    from typer.testing import CliRunner

    from hallmark.cli import app

    res = CliRunner().invoke(app, [*args, "--data-dir", str(data)], input=stdin)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    out = Result(res.exit_code, res.stdout, res.stderr)
    if check:
        assert out.returncode == 0, (args, out)
    return out


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_users_robots_and_audit(tmp_path: Path, backend: str) -> None:
    data = tmp_path / "data"
    out = hallmark(data, "user", "add", "ops", "--role", "administrator").stdout
    assert out.startswith("created user ops; password: ")
    hallmark(data, "user", "add", "dev", "--password-stdin", stdin="dev-password-123\n")
    assert "dev-password-123" not in hallmark(data, "user", "list").stdout
    assert hallmark(data, "user", "add", "dev", "--password-stdin", stdin="x" * 10, check=False).returncode == 2
    hallmark(data, "user", "passwd", "dev", "--password-stdin", stdin="new-password-456\n")
    robot = hallmark(data, "robot", "create", "builder", "--scope", "repository:apps/*:pull,push").stdout
    token = robot.strip().splitlines()[-1]
    assert token.startswith("hmk_")
    hallmark(data, "permission", "add", "dev", "read", "--namespace", "apps")
    assert "revoked 1 token(s)" in hallmark(data, "robot", "revoke", "builder").stdout
    listing = {p["name"]: p for p in json.loads(hallmark(data, "user", "list", "--json").stdout)}
    assert (listing["builder"]["kind"], listing["builder"]["disabled"]) == ("robot", True)
    assert (listing["dev"]["kind"], listing["dev"]["disabled"]) == ("user", False)

    ok = hallmark(data, "audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout
    lines = [json.loads(x) for x in hallmark(data, "audit", "export").stdout.splitlines()]
    actions = [e["action"] for e in lines]
    for expected in ("user.create", "user.password", "robot.create", "token.create", "token.revoke"):
        assert expected in actions
    assert all(token not in json.dumps(e) and "new-password-456" not in json.dumps(e) for e in lines)
    engine = make_engine(f"sqlite:///{data / 'hallmark.db'}", 1)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(actor="someone-else"))
    engine.dispose()
    bad = hallmark(data, "audit", "verify", check=False)
    assert bad.returncode == 1 and "BROKEN at entry 3" in bad.stderr

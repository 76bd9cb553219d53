"""N real ``hallmark worker`` processes on one PostgreSQL: no job runs twice, and a SIGKILLed worker's
job is taken over once its lease (``pipeline.lease_seconds``) runs out.

Every claim is recorded by a trigger on the jobs table (a claim is the only way a job starts), so the
runs per job id come from the database itself, whatever the workers log.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import PostgresServer, Server, free_port
from tests.pipeline.workerhelp import libpq_url, push_small_image, start_worker, stop, wait_idle

pytestmark = pytest.mark.postgres

RECORD_CLAIMS = """
CREATE TABLE test_job_claims (
    job_id BIGINT NOT NULL, kind TEXT NOT NULL, worker TEXT NOT NULL,
    locked_until TIMESTAMPTZ, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION test_record_claim() RETURNS trigger AS $$
BEGIN
    INSERT INTO test_job_claims (job_id, kind, worker, locked_until)
    VALUES (NEW.id, NEW.kind, NEW.locked_by, NEW.locked_until);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_record_claim AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.state = 'running' AND NEW.locked_by IS DISTINCT FROM OLD.locked_by
          OR NEW.state = 'running' AND OLD.state <> 'running'
          OR NEW.attempts <> OLD.attempts)
    EXECUTE FUNCTION test_record_claim();
"""


class Stack:
    def __init__(self, server: Server, db_url: str, tmp: Path) -> None:
        self.server = server
        self.db_url = db_url
        self.tmp = tmp
        self.db = psycopg.connect(libpq_url(db_url), autocommit=True)

    def worker(self, name: str, threads: int = 1, **env: str) -> subprocess.Popen[bytes]:
        return start_worker(self.server.data_dir, self.db_url, self.tmp / f"{name}.log", threads, **env)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("workers")
    data = tmp / "data"
    data.mkdir()
    db_url = postgres.create_db(f"w{free_port()}")
    # the server queues jobs on push and runs none: only the workers below do
    env = {"HALLMARK_PIPELINE__WORKERS": "0", "HALLMARK_INDEX__LARGE_WORKERS": "0"}
    server = Server(data, db_url, env=env).start()
    s = Stack(server, db_url, tmp)
    s.db.execute(RECORD_CLAIMS)
    try:
        yield s
    finally:
        s.db.close()
        server.stop()


def claims(db: psycopg.Connection, job_id: int) -> list[tuple[str, object, object]]:
    return [
        (str(w), until, at)
        for w, until, at in db.execute(
            "SELECT worker, locked_until, at FROM test_job_claims WHERE job_id = %s ORDER BY at", (job_id,)
        )
    ]


def test_three_workers_never_run_one_job_twice(stack: Stack) -> None:
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        digests = [push_small_image(client, "workers/many", f"v{i}") for i in range(12)]
    workers = [stack.worker(f"many-{i}") for i in range(3)]
    try:
        wait_idle(stack.db, workers, timeout=300)
    finally:
        stop(workers)
    runs = stack.db.execute(
        "SELECT j.id, j.kind, j.state, count(c.job_id) FROM jobs j LEFT JOIN test_job_claims c ON c.job_id = j.id"
        " WHERE j.key LIKE 'workers/many@%' GROUP BY j.id, j.kind, j.state"
    ).fetchall()
    kinds = sorted({kind for _, kind, _, _ in runs})
    assert {"index", "match", "provenance"} <= set(kinds)
    assert len([r for r in runs if r[1] == "index"]) == len(digests)
    assert [r for r in runs if r[3] != 1] == []  # every job claimed, and claimed exactly once
    assert {state for _, _, state, _ in runs} == {"done"}
    statuses = stack.db.execute(
        "SELECT status, count(*) FROM images WHERE repo_name = 'workers/many' GROUP BY status"
    ).fetchall()
    assert statuses == [("done", len(digests))]
    pids = {str(w.pid) for w in workers}
    claimed_by = {
        str(w).split(":")[1]
        for (w,) in stack.db.execute(
            "SELECT c.worker FROM test_job_claims c JOIN jobs j ON j.id = c.job_id WHERE j.key LIKE 'workers/many@%'"
        )
    }
    assert claimed_by <= pids


def wait_for(check: Callable[[], bool], what: str, why: Callable[[], str] = str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why()}"
        time.sleep(0.1)


def test_a_killed_workers_job_is_taken_over_after_its_lease(stack: Stack) -> None:
    lease = 3
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        digest = push_small_image(client, "workers/killed", "v1")
    key = f"workers/killed@{digest}"
    found: list[int] = []

    def queued() -> bool:  # the server queues the jobs just after answering the push
        row = stack.db.execute("SELECT id FROM jobs WHERE kind = 'index' AND key = %s", (key,)).fetchone()
        found.extend(row or ())
        return bool(row)

    wait_for(queued, "the index job")
    job_id = found[0]
    # Hold the image rows still: the index job's first write waits here, so the worker is mid-job.
    blocker = psycopg.connect(libpq_url(stack.db_url))
    blocker.execute("LOCK TABLE images IN EXCLUSIVE MODE")
    first = stack.worker("killed-a", HALLMARK_PIPELINE__LEASE_SECONDS=str(lease))
    second: subprocess.Popen[bytes] | None = None
    try:

        def first_is_stuck_in_the_job() -> bool:
            waiting = stack.db.execute(
                "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE images%'"
            ).fetchall()
            return bool(waiting) and len(claims(stack.db, job_id)) == 1

        def why() -> str:
            acts = stack.db.execute(
                "SELECT wait_event_type, state, left(query, 120) FROM pg_stat_activity"
                " WHERE datname = current_database()"
            ).fetchall()
            return f"claims {claims(stack.db, job_id)}; sessions {acts}; log {stack.log('killed-a')[-2000:]}"

        wait_for(first_is_stuck_in_the_job, "the first worker to claim the index job and wait inside it", why)
        assert f":{first.pid}:" in claims(stack.db, job_id)[0][0]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = stack.worker("killed-b", threads=2, HALLMARK_PIPELINE__LEASE_SECONDS=str(lease))
        wait_for(lambda: len(claims(stack.db, job_id)) == 2, "the second worker to take the job over")
    finally:
        blocker.rollback()
        blocker.close()
        stop([first])
    try:
        wait_idle(stack.db, [second], timeout=120)
    finally:
        stop([second])
    (a, a_until, _), (b, _, b_at) = claims(stack.db, job_id)
    assert f":{first.pid}:" in a and f":{second.pid}:" in b
    assert b_at >= a_until  # type: ignore[operator]  # not before the first lease ran out
    state, attempts = stack.db.execute("SELECT state, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone() or ()
    assert (state, attempts) == ("done", 2)
    (status,) = stack.db.execute(
        "SELECT status FROM images WHERE repo_name = 'workers/killed' AND digest = %s", (digest,)
    ).fetchone() or ("missing",)
    assert status == "done"

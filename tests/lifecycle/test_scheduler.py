"""The scheduler: a due job is claimed by exactly one worker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hallmark.config import load_config
from hallmark.lifecycle.scheduler import JOBS, PeriodicJob, Scheduler, register
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore, utcnow
from tests.conftest import PostgresServer, free_port


class Ctx:
    def __init__(self, meta: MetadataStore) -> None:
        self.config = load_config(environ={})
        self.meta = meta
        self.blobs = self.registry = self.pipeline = None


@pytest.fixture(params=["sqlite", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_db(f"s{free_port()}")
    else:
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    engine = make_engine(url, 8)
    migrate(engine)
    yield MetadataStore(engine)
    engine.dispose()


@pytest.fixture
def counting_job() -> Iterator[list[str]]:
    runs: list[str] = []

    def run(ctx: Any) -> dict[str, Any]:
        runs.append(threading.current_thread().name)
        time.sleep(0.3)  # long enough for the other worker to try while this one holds the claim
        return {"n": len(runs)}

    register(PeriodicJob("test.count", lambda c: 3600, run))
    yield runs
    JOBS.pop("test.count", None)


def test_due_job_runs_once_with_two_workers(meta: MetadataStore, counting_job: list[str]) -> None:
    ctx = Ctx(meta)
    past = utcnow() - dt.timedelta(minutes=1)
    Scheduler(meta, "setup").ensure("test.count", past)
    results: dict[str, list[dict[str, Any]]] = {}
    barrier = threading.Barrier(2)

    def worker(owner: str) -> None:
        barrier.wait()
        results[owner] = Scheduler(meta, owner).run_due(ctx, only={"test.count"})

    threads = [threading.Thread(target=worker, args=(f"w{i}",), name=f"w{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counting_job) == 1
    assert sorted(len(r) for r in results.values()) == [0, 1]
    # Not due again until the interval has passed; forced, it runs.
    assert Scheduler(meta, "w3").run_due(ctx, only={"test.count"}) == []
    forced = Scheduler(meta, "w3").run_due(ctx, force=True, only={"test.count"})
    assert [r["status"] for r in forced] == ["ok"] and len(counting_job) == 2
    row = next(r for r in Scheduler(meta).status() if r["name"] == "test.count")
    assert row["last_status"] == "ok" and row["claimed_by"] is None and row["last_detail"] == {"n": 2}


def test_a_dead_workers_claim_expires(meta: MetadataStore, counting_job: list[str]) -> None:
    now = utcnow()
    dead = Scheduler(meta, "dead", lease_seconds=60)
    dead.ensure("test.count", now - dt.timedelta(seconds=1))
    assert dead.claim("test.count", now)
    other = Scheduler(meta, "other")
    assert not other.claim("test.count", now + dt.timedelta(seconds=30))  # the claim is live
    assert other.claim("test.count", now + dt.timedelta(seconds=61))  # the lease ran out


def test_a_failing_job_is_recorded_and_rescheduled(meta: MetadataStore) -> None:
    def boom(ctx: Any) -> dict[str, Any]:
        raise RuntimeError("feed unreachable")

    register(PeriodicJob("test.boom", lambda c: 60, boom))
    try:
        sched = Scheduler(meta, "w")
        out = sched.run_due(Ctx(meta), force=True, only={"test.boom"})
        assert out[0]["status"] == "failed" and "feed unreachable" in out[0]["detail"]["error"]
        row = next(r for r in sched.status() if r["name"] == "test.boom")
        assert row["claimed_by"] is None and row["next_run_at"] is not None
    finally:
        JOBS.pop("test.boom", None)

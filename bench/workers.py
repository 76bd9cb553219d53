"""Index jobs per minute with 1, 2 and 4 ``hallmark worker`` processes on one PostgreSQL.

    python -m bench.workers [--images 200] [--workers 1,2,4] [--pg-url postgresql+psycopg://...]

200 small generated images (one gzip layer of about 1 KB: os-release and a dpkg status with three
packages, content differing per tag) are pushed once through a real ``hallmark serve`` (which runs
no jobs itself); each run then starts from a copy of that database (``CREATE DATABASE ... TEMPLATE``)
so every worker count faces the same 200 index jobs (plus the provenance and match jobs each image
brings: 600 jobs in all). The jobs are held back (``run_after``) until every worker is connected to
the database, plus 2 s, so the workers' start-up (imports, connecting) is not counted; the clock runs
from their release to the last finished index job (and to an empty queue). The peer is the same run's
single-worker figure: no other registry runs Hallmark's job queue, so there is no external peer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from tests.conftest import PostgresServer, Server
from tests.pipeline.workerhelp import libpq_url, push_small_image, start_worker, stop, wait_idle


def jobs_where(conn: psycopg.Connection, cond: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM jobs WHERE {cond}").fetchone()
    return int(row[0]) if row else 0


def prepare(pg: PostgresServer, data: Path, images: int) -> str:
    """Push ``images`` images into a template database; its name."""
    url = pg.create_db("bench_workers_template")
    env = {"HALLMARK_PIPELINE__WORKERS": "0", "HALLMARK_INDEX__LARGE_WORKERS": "0"}
    server = Server(data, url, env=env).start()
    try:
        started = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(images):
                push_small_image(client, f"bench/workers{i % 10}", f"v{i}")
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            while jobs_where(conn, "kind = 'index' AND state = 'queued'") < images:
                time.sleep(0.1)  # the server queues the jobs just after answering each push
        print(f"pushed {images} images in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        server.stop()
    return "bench_workers_template"


def run(pg: PostgresServer, template: str, data: Path, n: int, images: int, tmp: Path) -> tuple[float, float]:
    """(index jobs per minute, all jobs per minute) with ``n`` worker processes."""
    name = f"bench_workers_{n}"
    with psycopg.connect(libpq_url(pg.url("postgres")), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    url = pg.url(name)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        total = jobs_where(conn, "TRUE")
        # a data folder of their own (it is bound to one database), the blobs the server wrote
        own = tmp / f"data-{n}"
        own.mkdir()
        blobs = str(data / "blobs")
        # the jobs wait until every worker is up: start-up (imports, connecting) is not timed
        conn.execute("UPDATE jobs SET run_after = now() + interval '1 day' WHERE state = 'queued'")
        procs = [
            start_worker(
                own, url, tmp / f"worker-{n}-{i}.log", HALLMARK_STORAGE__PATH=blobs, PGAPPNAME=f"bench-{n}-{i}"
            )
            for i in range(n)
        ]
        try:
            connected = (
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
                f" WHERE application_name LIKE 'bench-{n}-%' AND state = 'idle'"
            )
            deadline = time.monotonic() + 120
            while (conn.execute(connected).fetchone() or (0,))[0] < n:
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, "a worker exited: " + (tmp / f"worker-{n}-0.log").read_text()[-3000:]
                sessions = "SELECT application_name, state, left(query, 80) FROM pg_stat_activity"
                assert time.monotonic() < deadline, f"workers not polling: {conn.execute(sessions).fetchall()}"
                time.sleep(0.05)
            time.sleep(2)  # from connecting (migration check) to the first poll of the queue
            conn.execute("UPDATE jobs SET run_after = now() WHERE state = 'queued'")
            t0 = time.monotonic()
            while jobs_where(conn, "kind = 'index' AND state = 'done'") < images:
                assert jobs_where(conn, "state = 'failed'") == 0, "a job failed"
                time.sleep(0.05)
            t_index = time.monotonic() - t0
            wait_idle(conn, procs, timeout=1800)
            t_all = time.monotonic() - t0
            total = jobs_where(conn, "state = 'done'")
        finally:
            stop(procs)
    with psycopg.connect(libpq_url(pg.url("postgres")), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name}")
    return images / t_index * 60, total / t_all * 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="hallmark-bench-workers-"))
    pg_root = Path(tempfile.mkdtemp(prefix="hallmark-bench-pg-"))  # owned by the postgres user when root
    pg = PostgresServer(pg_root)
    pg.start()
    try:
        data = tmp / "data"
        data.mkdir()
        template = prepare(pg, data, args.images)
        print(f"os.cpu_count() = {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for n in counts:
            index_rate, all_rate = run(pg, template, data, n, args.images, tmp)
            rows.append((n, index_rate, all_rate))
            load = os.getloadavg()[0]
            print(f"{n} worker(s): {index_rate:.0f} index jobs/min, {all_rate:.0f} jobs/min in all (load {load:.1f})")
        base = rows[0][1]
        print("\n| workers | index jobs/min | all jobs/min | vs 1 worker |")
        print("| ---: | ---: | ---: | ---: |")
        for n, index_rate, all_rate in rows:
            print(f"| {n} | {index_rate:.0f} | {all_rate:.0f} | {index_rate / base:.2f}x |")
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    main()

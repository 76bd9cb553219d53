"""``hallmark worker`` processes beside a ``hallmark serve`` on PostgreSQL (tests/pipeline/test_workers.py
and bench/workers.py): start them, push small Debian-like images, watch the jobs table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from tests.ocihelp import push_image

# dpkg status of a small Debian 12 image: three packages, so the indexer has something to find
DPKG_STATUS = b"".join(
    b"Package: %s\nStatus: install ok installed\nArchitecture: amd64\nVersion: %s\n\n" % (name, version)
    for name, version in ((b"libc6", b"2.36-9+deb12u4"), (b"zlib1g", b"1:1.2.13.dfsg-1"), (b"openssl", b"3.0.11-1"))
)
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'


def push_small_image(client: httpx.Client, repo: str, tag: str) -> str:
    """One single-layer image (about 1 KB of gzip) whose content differs by repo and tag; its digest."""
    files = {
        "etc/os-release": OS_RELEASE,
        "var/lib/dpkg/status": DPKG_STATUS,
        "srv/app.txt": f"{repo}:{tag}\n".encode(),
    }
    return push_image(client, repo, tag, files)


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def start_worker(data_dir: Path, db_url: str, log: Path, threads: int = 1, **env: str) -> subprocess.Popen[bytes]:
    """A real ``hallmark worker`` process on the same data folder (blobs) and database as the server."""
    full = {
        **os.environ,
        "HALLMARK_DATA_DIR": str(data_dir),
        "HALLMARK_DATABASE_URL": db_url,
        "HALLMARK_ACCESS__ENABLED": "false",
        **env,
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hallmark", "worker", "--threads", str(threads)],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def unfinished(conn: psycopg.Connection) -> int:
    """Jobs queued or running."""
    row = conn.execute("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()
    return int(row[0]) if row else 0


def wait_idle(conn: psycopg.Connection, procs: list[subprocess.Popen[bytes]], timeout: float = 300) -> None:
    """Until no job is queued or running (fails when a worker died or the deadline passed)."""
    deadline = time.monotonic() + timeout
    while unfinished(conn):
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"worker exited: {dead}"
        assert time.monotonic() < deadline, f"{unfinished(conn)} jobs still unfinished"
        time.sleep(0.2)

"""Portal catalog page time over many repositories (issue 17 target: < 200 ms server time).

    python -m bench.portal                         # 10,000 repositories, one image each
    python -m bench.portal --repos 1000 --seed 7   # smaller run

The generator (seeded; the seed is printed) writes straight into a migrated SQLite database (the
embedded default): 10,000 repositories with one scanned image each, a tag, a distro, finding
counts, a grade A-F and a catalog entry (stage, owner, description) for 40 % of them. A real
``hallmark serve`` (access control off) then serves ``GET /catalog``; the time is measured over
loopback, so it is an upper bound of the server time. One cold request, then 10 warm ones, for
the unfiltered page, a name search and a stage filter.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from hallmark.catalog.tables import catalog_entries
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import utcnow
from hallmark.metadata.tables import repositories, tags
from hallmark.pipeline.tables import images

SEED = 20261206
TARGET_MS = 200


def generate(data: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    url = load_config(environ={"HALLMARK_DATA_DIR": str(data)}).database_url
    engine = make_engine(url, 1)
    migrate(engine)
    now = utcnow()
    distro = orjson.dumps({"id": "debian", "version_id": "12", "codename": "bookworm"}).decode()
    repos, imgs, tag_rows, entries = [], [], [], []
    for i in range(n):
        name = f"team{i % 50}/service-{i}"
        digest = f"sha256:{rng.getrandbits(256):064x}"
        crit, high = rng.choice([0, 0, 0, 1, 2]), rng.randint(0, 20)
        summary = {"by_severity": {"critical": crit, "high": high, "medium": rng.randint(0, 40)}, "total": crit + high}
        repos.append({"id": i + 1, "name": name, "immutable_tags": False, "created_at": now})
        imgs.append(
            {
                "repo_name": name,
                "digest": digest,
                "status": "done",
                "distro": distro,
                "package_count": rng.randint(50, 400),
                "summary": orjson.dumps(summary).decode(),
                "grade": rng.choice("ABCDEF"),
                "updated_at": now,
            }
        )
        tag_rows.append({"repo_id": i + 1, "name": "v1", "digest": digest, "updated_at": now})
        if rng.random() < 0.4:
            entries.append(
                {
                    "repo_name": name,
                    "digest": digest,
                    "stage": rng.choice(["approved", "approved", "deprecated", "staging"]),
                    "owner": f"team-{i % 50}",
                    "owner_kind": "team",
                    "description": f"Service {i} of team {i % 50}",
                    "updated_at": now,
                }
            )
    with engine.begin() as conn:
        for table, rows in ((repositories, repos), (images, imgs), (tags, tag_rows), (catalog_entries, entries)):
            for k in range(0, len(rows), 2000):
                conn.execute(table.insert(), rows[k : k + 2000])
    engine.dispose()


def _cpu_seconds(pid: int) -> float:
    """The server process's user+system CPU time (Linux /proc): what a request costs the server,
    whatever else the machine runs (wall-clock times include waiting for a core)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.portal", description=__doc__.split("\n")[0])
    ap.add_argument("--repos", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    print(f"seed {args.seed}, {args.repos} repositories (one image each)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        t = time.perf_counter()
        generate(data, args.repos, args.seed)
        print(f"generated in {time.perf_counter() - t:.1f} s", flush=True)
        host = f"127.0.0.1:{_port()}"
        env = {**os.environ, "HALLMARK_DATA_DIR": str(data), "HALLMARK_ACCESS__ENABLED": "false"}
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallmark", "serve", "--listen", host], env=env, stdout=log, stderr=log
        )
        try:
            with httpx.Client(base_url=f"http://{host}", timeout=60) as c:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if c.get("/v2/").status_code in (200, 401):
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("server did not start: " + (Path(tmp) / "server.log").read_text()[-2000:])
                    time.sleep(0.2)
                for label, path in (
                    ("catalog, no filter", "/catalog"),
                    ("catalog, name search", "/catalog?q=service-42"),
                    ("catalog, stage=approved", "/catalog?stage=approved"),
                ):
                    times = []
                    for i in range(11):
                        if i == 1:
                            cpu = _cpu_seconds(proc.pid)
                        t = time.perf_counter()
                        r = c.get(path)
                        times.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, r.text[:500]
                    cpu_ms = (_cpu_seconds(proc.pid) - cpu) * 100  # the 10 warm requests, per request
                    cold, warm = times[0], times[1:]
                    status = "OK" if statistics.median(warm) < TARGET_MS else "MISSED"
                    print(
                        f"{label:<26} cold {cold:6.0f} ms, warm median {statistics.median(warm):5.0f} ms, "
                        f"max {max(warm):5.0f} ms, server CPU {cpu_ms:4.0f} ms/request, {len(r.content) // 1024} KiB "
                        f"[target < {TARGET_MS} ms: {status}]",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


if __name__ == "__main__":
    main()

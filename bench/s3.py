"""Registry throughput on S3: Hallmark vs the CNCF distribution registry (Debian ``docker-registry``).

Both registries store into buckets of one S3 server started here (moto's standalone server,
its own process; see tests/s3help.py for why not radosgw), in the same run, with the same
clients as bench/registry.py (curl for big blobs, an asyncio client for small ones). Pulls
are measured streamed through the registry and redirected (307 to a presigned URL, followed
by curl), for each registry in both modes. moto keeps objects in memory: sizes stay modest.

    python -m bench.s3 [--size-mib 128] [--small 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import boto3
import httpx

from bench.registry import (
    curl,
    free_port,
    make_blob,
    median_rate,
    push_chunked,
    push_monolithic,
    small_blobs,
    split_chunks,
    timed,
    wait_up,
)

KEY, SECRET = "bench", "bench-secret"


def start_moto(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp / "moto.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/moto-api/", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def make_bucket(endpoint: str, name: str) -> str:
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    s3.create_bucket(Bucket=name)
    return name


def start_hallmark(
    tmp: Path, endpoint: str, bucket: str, redirect: bool, workers: int
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    data = tmp / "hallmark"  # both Hallmark servers share it: one database, as replicas would
    env = {
        **os.environ,
        "HALLMARK_DATA_DIR": str(data),
        "HALLMARK_ACCESS__ENABLED": "false",
        "HALLMARK_PIPELINE__ENABLED": "false",
        "HALLMARK_STORAGE__DRIVER": "s3",
        "HALLMARK_STORAGE__BUCKET": bucket,
        "HALLMARK_STORAGE__ENDPOINT": endpoint,
        "HALLMARK_STORAGE__REGION": "us-east-1",
        "HALLMARK_STORAGE__PATH_STYLE": "true",
        "HALLMARK_STORAGE__ACCESS_KEY": KEY,
        "HALLMARK_STORAGE__SECRET_KEY": SECRET,
        "HALLMARK_STORAGE__REDIRECT": str(redirect).lower(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hallmark", "serve", "--listen", f"127.0.0.1:{port}", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def start_distribution(tmp: Path, endpoint: str, bucket: str, redirect: bool) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise SystemExit("docker-registry not installed (apt-get install docker-registry)")
    port = free_port()
    cfg = tmp / f"distribution-{port}.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  s3:\n"
        f"    accesskey: {KEY}\n    secretkey: {SECRET}\n    region: us-east-1\n"
        f"    regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n"
        f"  delete:\n    enabled: true\n  redirect:\n    disable: {str(not redirect).lower()}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    # aws-sdk-go refuses AWS_CA_BUNDLE with the registry's HTTP transport (the endpoint is plain HTTP anyway).
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen(
        [binary, "serve", str(cfg)], stdout=open(tmp / "distribution.log", "ab"), stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def pull(url: str, repo: str, digest: str) -> None:
    curl("-L", "-o", "/dev/null", f"{url}/v2/{repo}/blobs/{digest}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="Hallmark server processes")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hallmark-bench-s3-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        endpoint, moto = start_moto(tmp)
        procs.append(moto)
        big, digest = make_blob(tmp / "big.bin", args.size_mib, b"mono")
        big2, digest2 = make_blob(tmp / "big2.bin", args.size_mib, b"chunked")
        parts = split_chunks(big2, args.chunk_mib << 20)
        small = [os.urandom(4096) for _ in range(args.small)]
        servers: dict[str, dict[str, str]] = {}
        for name in ("hallmark", "distribution"):
            bucket = make_bucket(endpoint, f"bench-{name}")
            for redirect in (False, True):
                if name == "hallmark":
                    url, proc = start_hallmark(tmp, endpoint, bucket, redirect, args.workers)
                else:
                    url, proc = start_distribution(tmp, endpoint, bucket, redirect)
                procs.append(proc)
                servers.setdefault(name, {})["redirect" if redirect else "stream"] = url
        mib = args.size_mib
        results: dict[str, dict[str, float]] = {}
        for name, urls in servers.items():
            url = urls["stream"]
            r: dict[str, float] = {}
            r["push_mono"] = median_rate(
                mib, args.repeat, lambda i: push_monolithic(url, f"bench/mono{i}", big, digest)
            )
            r["push_chunked"] = median_rate(
                mib, args.repeat, lambda i: push_chunked(url, f"bench/chunked{i}", parts, digest2)
            )
            r["small"] = args.small / timed(
                lambda: asyncio.run(small_blobs(url, "bench/small", small, args.concurrency))
            )
            for mode, murl in urls.items():
                pull(murl, "bench/mono0", digest)  # warm
                rates = sorted(mib / timed(partial(pull, murl, "bench/mono0", digest)) for _ in range(args.repeat))
                r[f"pull_{mode}"] = rates[len(rates) // 2]
            results[name] = r
            print(f"  measured {name}", flush=True)
        rows = [
            ("blob push, monolithic (MiB/s)", "push_mono"),
            (f"blob push, {args.chunk_mib} MiB chunks (MiB/s)", "push_chunked"),
            ("blob pull, streamed (MiB/s)", "pull_stream"),
            ("blob pull, 307 to presigned URL (MiB/s)", "pull_redirect"),
            (f"{args.small} x 4 KiB pushes @{args.concurrency} (blobs/s)", "small"),
        ]
        print(
            f"\nS3 benchmark: {mib} MiB blob (median of {args.repeat}); both registries on one moto S3 server; "
            f"Hallmark with {args.workers} worker(s)"
        )
        print(f"{'workload':44} {'hallmark':>10} {'distribution':>13} {'ratio':>7}")
        for label, key in rows:
            a, b = results["hallmark"][key], results["distribution"][key]
            print(f"{label:44} {a:10.1f} {b:13.1f} {a / b if b else float('inf'):6.2f}x")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

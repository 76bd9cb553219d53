"""Registry throughput: Hallmark vs the CNCF distribution registry (Debian ``docker-registry``).

Both servers run side by side on loopback with the same data and the same
clients: curl for the big blob transfers (so the client is not the bottleneck),
an asyncio client for many small blobs, and wrk for manifest GETs.

    python -m bench.registry [--size-mib 1024] [--small 2000] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited")
        try:
            if httpx.get(url + "/v2/", timeout=1).status_code in (200, 401):
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def start_hallmark(tmp: Path, workers: int) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    # The peer runs without authentication; so does Hallmark here, to compare the same work.
    env = {
        **os.environ,
        "HALLMARK_DATA_DIR": str(tmp / "hallmark"),
        "HALLMARK_ACCESS__ENABLED": "false",
        "HALLMARK_PIPELINE__ENABLED": "false",
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


def start_distribution(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise SystemExit("docker-registry not installed (apt-get install docker-registry)")
    port = free_port()
    cfg = tmp / "distribution.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'distribution'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, text=True, check=True).stdout


def start_upload(url: str, repo: str) -> str:
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", f"{url}/v2/{repo}/blobs/uploads/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loc = re.search(r"(?im)^location:\s*(\S+)", out)
    assert loc, out
    location = loc.group(1)
    return location if location.startswith("http") else url + location


def push_monolithic(url: str, repo: str, path: Path, digest: str) -> None:
    loc = start_upload(url, repo)
    sep = "&" if "?" in loc else "?"
    curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", str(path), f"{loc}{sep}digest={digest}")


def make_blob(path: Path, mib: int, salt: bytes) -> tuple[Path, str]:
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            b = block[: -8 - len(salt)] + salt + i.to_bytes(8, "big")
            f.write(b)
            h.update(b)
    return path, "sha256:" + h.hexdigest()


def split_chunks(path: Path, chunk: int) -> list[Path]:
    """Chunk files on disk, so curl uploads each from a file for both servers alike."""
    parts = []
    with open(path, "rb") as f:
        i = 0
        while data := f.read(chunk):
            part = path.with_name(f"{path.name}.part{i:04d}")
            part.write_bytes(data)
            parts.append(part)
            i += 1
    return parts


def push_chunked(url: str, repo: str, parts: list[Path], digest: str) -> None:
    loc = start_upload(url, repo)
    off = 0
    for part in parts:
        size = part.stat().st_size
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--fail",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/octet-stream",
                "-H",
                f"Content-Range: {off}-{off + size - 1}",
                "-T",
                str(part),
                loc,
            ],
            capture_output=True,
            check=True,
        ).stdout.decode()
        m = re.search(r"(?im)^location:\s*(\S+)", out)
        assert m, out
        loc = m.group(1) if m.group(1).startswith("http") else url + m.group(1)
        off += size
    sep = "&" if "?" in loc else "?"
    curl("-X", "PUT", "-H", "Content-Length: 0", f"{loc}{sep}digest={digest}")


def pull(url: str, repo: str, digest: str) -> None:
    curl("-o", "/dev/null", f"{url}/v2/{repo}/blobs/{digest}")


async def small_blobs(url: str, repo: str, blobs: list[bytes], concurrency: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in blobs:
        queue.put_nowait(b)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            while not queue.empty():
                data = queue.get_nowait()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                async with session.post(f"{url}/v2/{repo}/blobs/uploads/") as r:
                    assert r.status == 202, await r.text()
                    loc = r.headers["Location"]
                loc = loc if loc.startswith("http") else url + loc
                sep = "&" if "?" in loc else "?"
                async with session.put(
                    f"{loc}{sep}digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"}
                ) as r:
                    assert r.status == 201, await r.text()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def push_manifest(url: str, repo: str, tag: str) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    with httpx.Client(base_url=url) as c:
        d = "sha256:" + hashlib.sha256(config).hexdigest()
        loc = c.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        sep = "&" if "?" in loc else "?"
        c.put(f"{loc}{sep}digest={d}", content=config).raise_for_status()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": len(config)},
                "layers": [],
            }
        ).encode()
        c.put(
            f"/v2/{repo}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        ).raise_for_status()


def wrk(url: str, seconds: int, connections: int) -> float:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not installed (apt-get install wrk)")
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw errors: {out}")
    assert m, out
    return float(m.group(1))


def timed(fn: Callable[[], object]) -> float:
    # Start every measurement with no dirty pages pending, so one run's writeback does not
    # land on the next (both servers write to the same disk).
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_rate(amount: float, runs: int, fn: Callable[[int], object]) -> float:
    """Median rate over ``runs`` repetitions (``fn(i)`` must use a fresh repository each time)."""
    rates = sorted(amount / timed(partial(fn, i)) for i in range(runs))
    return rates[len(rates) // 2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="Hallmark server processes")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each big-blob transfer (median shown)")
    ap.add_argument("--only", default="", help="comma-separated subset: push_mono,push_chunked,pull,small,manifest_get")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))

    def want(key: str) -> bool:
        return not only or key in only

    tmp = Path(tempfile.mkdtemp(prefix="hallmark-bench-"))
    procs = []
    try:
        big, digest = make_blob(tmp / "big.bin", args.size_mib, b"mono")
        # Different content for the chunked push, so neither server can reuse the first blob.
        big2, digest2 = make_blob(tmp / "big2.bin", args.size_mib, b"chunked")
        small = [os.urandom(4096) for _ in range(args.small)]
        parts = split_chunks(big2, args.chunk_mib << 20)
        hm_url, p1 = start_hallmark(tmp, args.workers)
        procs.append(p1)
        peer_url, p2 = start_distribution(tmp)
        procs.append(p2)
        mib = args.size_mib
        results: dict[str, dict[str, float]] = {}
        for name, url in (("hallmark", hm_url), ("distribution", peer_url)):
            r: dict[str, float] = {}
            reps = args.repeat
            if want("push_mono") or want("pull"):
                r["push_mono"] = median_rate(
                    mib, reps, lambda i: push_monolithic(url, f"bench/mono{i}", big, digest)
                )
            if want("push_chunked"):
                r["push_chunked"] = median_rate(
                    mib, reps, lambda i: push_chunked(url, f"bench/chunked{i}", parts, digest2)
                )
            if want("small"):
                r["small"] = args.small / timed(
                    lambda: asyncio.run(small_blobs(url, "bench/small", small, args.concurrency))
                )
            if want("manifest_get"):
                push_manifest(url, "bench/manifest", "latest")
                r["manifest_get"] = wrk(f"{url}/v2/bench/manifest/manifests/latest", args.seconds, 32)
            results[name] = r
            print(f"  measured {name}", flush=True)
        if want("pull"):
            # Pulls vary most from run to run (loopback copy limit, scheduling): the two servers
            # take turns, after both warmed their page cache, and the median of 7 each is shown.
            servers = (("hallmark", hm_url), ("distribution", peer_url))
            for _, url in servers:
                pull(url, "bench/mono0", digest)
            samples: dict[str, list[float]] = {name: [] for name, _ in servers}
            for _ in range(max(args.repeat, 7)):
                for name, url in servers:
                    samples[name].append(mib / timed(partial(pull, url, "bench/mono0", digest)))
            for name, rates in samples.items():
                results[name]["pull"] = sorted(rates)[len(rates) // 2]
                print(f"  {name} pulls (MiB/s): {' '.join(f'{x:.0f}' for x in rates)}", flush=True)
        rows = [
            ("blob push, monolithic (MiB/s)", "push_mono", 3.0),
            (f"blob push, {args.chunk_mib} MiB chunks (MiB/s)", "push_chunked", 3.0),
            ("blob pull (MiB/s)", "pull", 1.5),
            (f"{args.small} x 4 KiB pushes @{args.concurrency} (blobs/s)", "small", 3.0),
            ("manifest GET by tag @32 (req/s)", "manifest_get", 5.0),
        ]
        print(
            f"\nRegistry benchmark: {mib} MiB blob (median of {args.repeat}, pulls of 7); Hallmark with {args.workers} "
            "worker(s); peer = CNCF distribution"
        )
        print(f"{'workload':44} {'hallmark':>10} {'distribution':>13} {'ratio':>7} {'target':>7}")
        for label, key, target in rows:
            if key not in results["hallmark"]:
                continue
            a, b = results["hallmark"][key], results["distribution"][key]
            ratio = a / b if b else float("inf")
            mark = "ok" if ratio >= target else "below"
            print(f"{label:44} {a:10.1f} {b:13.1f} {ratio:6.2f}x {target:5.1f}x {mark}")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

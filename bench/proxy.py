"""Pull-through cache: skopeo pulling an image through Hallmark's proxy vs straight from the upstream.

The upstream is Debian's ``docker-registry`` (the CNCF registry) on loopback; Hallmark proxies it as
namespace ``up``. Cold: the first pull of a repository through the proxy (manifest and every blob
fetched from the upstream while they are streamed and stored). Warm: a later pull, served locally.
Each is compared with the same skopeo pull straight from the upstream, and with the first pull of
the same image pushed to Hallmark (the registry's own blob path, no proxy). The pipeline is off so the
numbers are the proxy's, not the scanner's (a proxied image is indexed afterwards like a push).

    python -m bench.proxy [--size-mib 200] [--layers 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.registry import free_port, wait_up

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(root: Path, size: int, layers: int) -> None:
    """An OCI layout with ``layers`` incompressible layers totalling ``size`` bytes (tag v1)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descs = []
    for _ in range(layers):
        # Valid gzip (stored blocks): skopeo would compress, and so re-digest, anything else.
        data = gzip.compress(os.urandom(size // layers), compresslevel=0, mtime=0)
        (blobs / sha256(data)[7:]).write_bytes(data)
        descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(data), "size": len(data)}
        )
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}
    ).encode()
    (blobs / sha256(config)[7:]).write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    (blobs / sha256(manifest)[7:]).write_bytes(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))


def skopeo(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def pull(host: str, repo: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    return skopeo("copy", "--src-tls-verify=false", f"docker://{host}/{repo}:v1", f"oci:{dest}:v1")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench.proxy")
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs skopeo and docker-registry (make debs)")
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        up_port, hm_port = free_port(), free_port()
        (tmp / "registry.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'upstream'}\n"
            f"http:\n  addr: 127.0.0.1:{up_port}\n  secret: bench\n"
        )
        (tmp / "hallmark.toml").write_text(
            f'[[mirror.proxy]]\nnamespace = "up"\nupstream = "http://127.0.0.1:{up_port}"\ninsecure = true\n'
        )
        env = {
            **os.environ,
            "HALLMARK_CONFIG": str(tmp / "hallmark.toml"),
            "HALLMARK_DATA_DIR": str(tmp / "hallmark"),
            "HALLMARK_ACCESS__ENABLED": "false",
            "HALLMARK_PIPELINE__ENABLED": "false",
        }
        procs = [
            subprocess.Popen(
                ["docker-registry", "serve", str(tmp / "registry.yml")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "hallmark", "serve", "--listen", f"127.0.0.1:{hm_port}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            up, hm = f"127.0.0.1:{up_port}", f"127.0.0.1:{hm_port}"
            wait_up(f"http://{up}", procs[0])
            wait_up(f"http://{hm}", procs[1])
            write_layout(tmp / "src", args.size_mib << 20, args.layers)
            cold, warm, direct, pushed = [], [], [], []
            blob_cold, blob_warm, blob_direct = [], [], []
            for i in range(args.runs):
                # A fresh image per run (new random layers): the proxy's cache is cold for it.
                shutil.rmtree(tmp / "src")
                write_layout(tmp / "src", args.size_mib << 20, args.layers)
                skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:v1", f"docker://{up}/bench/img{i}:v1")
                skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:v1", f"docker://{hm}/plain/img{i}:v1")
                # One layer with curl (no client-side work): the proxy's own cost per byte.
                layer = max((tmp / "src" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size).name
                skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:v1", f"docker://{up}/bench/blob{i}:v1")
                blob_direct.append(curl(f"http://{up}/v2/bench/blob{i}/blobs/sha256:{layer}"))
                blob_cold.append(curl(f"http://{hm}/v2/up/bench/blob{i}/blobs/sha256:{layer}"))
                blob_warm.append(curl(f"http://{hm}/v2/up/bench/blob{i}/blobs/sha256:{layer}"))
                direct.append(pull(up, f"bench/img{i}", tmp / "out"))
                cold.append(pull(hm, f"up/bench/img{i}", tmp / "out"))
                time.sleep(2)  # the background completion stores the manifest once its blobs are in
                direct.append(pull(up, f"bench/img{i}", tmp / "out"))
                warm.append(pull(hm, f"up/bench/img{i}", tmp / "out"))
                pushed.append(pull(hm, f"plain/img{i}", tmp / "out"))
            d, c, w = statistics.median(direct), statistics.median(cold), statistics.median(warm)
            p = statistics.median(pushed)
            print(f"image: {args.size_mib} MiB in {args.layers} layers; {args.runs} runs, medians; load {load()}")
            print(f"direct from upstream : {d:6.2f} s  ({args.size_mib / d:7.1f} MiB/s)  runs {fmt(direct)}")
            print(f"cold through proxy   : {c:6.2f} s  ({args.size_mib / c:7.1f} MiB/s)  runs {fmt(cold)}")
            print(f"warm through proxy   : {w:6.2f} s  ({args.size_mib / w:7.1f} MiB/s)  runs {fmt(warm)}")
            print(f"pushed to Hallmark   : {p:6.2f} s  ({args.size_mib / p:7.1f} MiB/s)  runs {fmt(pushed)}")
            print(f"cold / direct = {c / d:.2f}x (target <= 1.3x); warm / direct = {w / d:.2f}x (target <= 1.0x)")
            print(f"first pull of a pushed image / direct = {p / d:.2f}x")
            print("spread (max/min) direct, cold, warm: " + spread(direct, cold, warm))
            mib = args.size_mib / args.layers
            bd, bc, bw = (statistics.median(v) for v in (blob_direct, blob_cold, blob_warm))
            print(f"one {mib:.0f} MiB layer with curl: direct {bd:.3f} s, cold via proxy {bc:.3f} s, warm {bw:.3f} s")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


def curl(url: str) -> float:
    start = time.perf_counter()
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True)
    assert r.stdout == "200", (url, r.stdout)
    return time.perf_counter() - start


def fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def spread(*columns: list[float]) -> str:
    """max/min of each column: how much the loaded machine moved the runs."""
    return ", ".join(f"{max(c) / min(c):.2f}x" for c in columns)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main(sys.argv[1:])

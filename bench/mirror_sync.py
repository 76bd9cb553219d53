"""Repository mirroring: a run over 50 tags of which 45 are unchanged (target: one request each).

The source is Debian's ``docker-registry`` (the CNCF registry) on loopback with 50 small images; the
destination a Hallmark data folder opened in this process (the run is the same code a worker runs).
Cold: the first run copies everything. Then 5 tags get new images and a run copies those 5 and skips
45. Last, a run with nothing changed. Requests are counted by the mirror's source client (one per
logical request; the first Basic/Bearer challenge adds one HTTP round trip per run).

    python -m bench.mirror_sync [--tags 50] [--changed 5] [--layer-kib 256]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.registry import free_port, wait_up

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(c: httpx.Client, repo: str, tag: str, layer_bytes: int) -> None:
    layer = os.urandom(layer_bytes)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
    ).encode()
    for blob in (layer, config):
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        c.put(
            httpx.URL(r.headers["Location"]).copy_merge_params({"digest": sha256(blob)}), content=blob
        ).raise_for_status()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}
            ],
        }
    ).encode()
    c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}).raise_for_status()


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench.mirror_sync")
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--changed", type=int, default=5)
    ap.add_argument("--layer-kib", type=int, default=256)
    args = ap.parse_args(argv)
    if shutil.which("docker-registry") is None:
        print("skipped: docker-registry not installed (make debs)")
        return
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    root = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root / 'store'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: bench}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    hm = None
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for i in range(args.tags):
                push(c, "bench/app", f"t{i:03}", args.layer_kib * 1024)
        env = {"HALLMARK_DATA_DIR": str(root / "data"), "HALLMARK_PIPELINE__ENABLED": "false"}
        hm = Hallmark.open(load_config(environ=env))
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate({"source": f"127.0.0.1:{port}/bench/app", "destination": "m/app", "insecure": True}), "bench"
        )

        def run(label: str) -> dict[str, Any]:
            started = time.perf_counter()
            result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
            seconds = time.perf_counter() - started
            print(
                f"{label:28} copied {result['copied']:3}  skipped {result['skipped']:3}  "
                f"requests {result['requests']:4}  blobs fetched {result['blobs_copied']:3}  {seconds:6.2f} s",
                flush=True,
            )
            return result

        run("cold (all new)")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for i in range(args.changed):
                push(c, "bench/app", f"t{i:03}", args.layer_kib * 1024)
        changed = run(f"{args.changed} changed, {args.tags - args.changed} unchanged")
        same = run("nothing changed")
        per_tag = (same["requests"] - 2) / args.tags  # minus the tag list and the referrers API probe
        print(f"requests per unchanged tag: {per_tag:.2f} (target 1)")
        per_changed = (changed["requests"] - 2 - (args.tags - args.changed)) / max(args.changed, 1)
        print(f"requests per changed tag (HEAD, manifest, config and layer): {per_changed:.2f}")
    finally:
        if hm is not None:
            hm.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

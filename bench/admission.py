"""Admission webhook latency: Deployment AdmissionReviews against a real ``hallmark serve`` over HTTPS.

The mix the issue asks for: Deployments of 1-5 containers, 80 % of the container images on
digests the webhook has seen (cached verdicts, still validated by their state stamp) and 20 %
on digests it has never seen (tag resolution, the pull decision, a verdict computed and stored),
sent open-loop at a fixed rate (latency counted from when each request was due, so a slow answer
cannot hide the queue behind it), with access control on, so every decision is also a durable
audit entry and a decisions-table row. TLS from ``hallmark tls generate`` (a CA and a server
certificate), as a cluster would call it.

    python -m bench.admission [--rate 200] [--seconds 30] [--uncached-images N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.registry import free_port

HOT_TAGS = 40
HOST = "hallmark.bench.example"


def _manifest(config: bytes, layer: bytes, n: int) -> bytes:
    import hashlib

    def desc(mt: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": mt, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
        "annotations": {"bench.n": str(n)},
    }
    return json.dumps(doc).encode()


def seed(url: str, verify: Any, db: Path, count: int, auth: httpx.BasicAuth) -> None:
    """``count`` images in bench/app (tags t0..), one shared layer; all approved in the catalog."""
    import hashlib

    layer, config = b"bench layer", json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    with httpx.Client(base_url=url, verify=verify, timeout=60, auth=auth) as c:
        for blob in (layer, config):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            r = c.post(f"/v2/bench/app/blobs/uploads/?digest={digest}", content=blob)
            assert r.status_code == 201, r.text
        digests = []
        for n in range(count):
            body = _manifest(config, layer, n)
            r = c.put(
                f"/v2/bench/app/manifests/t{n}",
                content=body,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert r.status_code == 201, r.text
            digests.append("sha256:" + hashlib.sha256(body).hexdigest())
    # The catalog's approval, written as CatalogStore writes it (the gates need a scan; not the point here).
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO catalog_entries (repo_name, digest, stage, stage_changed_at, updated_at)"
                " VALUES ('bench/app', :d, 'approved', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            [{"d": d} for d in digests],
        )
    engine.dispose()


def deployment(n: int, images: list[str]) -> bytes:
    spec = {"containers": [{"name": f"c{i}", "image": img} for i, img in enumerate(images)]}
    metadata = {"name": f"app-{n % 500}", "namespace": f"team-{n % 20}"}
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": {"spec": spec}},
    }
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    req = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": gvk,
        "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": metadata["name"],
        "namespace": metadata["namespace"],
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}).encode()


async def load(url: str, verify: Any, bodies: list[bytes], rate: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, verify=verify, timeout=10, limits=limits) as c:
        # Warm the connections (the API server keeps them open).
        await asyncio.gather(*(c.get("/healthz") for _ in range(16)))
        start = time.perf_counter()

        async def one(i: int, body: bytes) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                r = await c.post("/admission/validate?cluster=bench", content=body)
                doc = r.json()
                if r.status_code != 200 or doc["response"]["allowed"] is not True:
                    errors += 1
            except (httpx.HTTPError, ValueError, KeyError):
                errors += 1
            latencies.append((time.perf_counter() - due) * 1000)

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.admission")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--plain-http", action="store_true", help="no TLS (to see what TLS costs)")
    args = ap.parse_args(argv)
    total = int(args.rate * args.seconds)
    rng = random.Random(14)
    sizes = [rng.randint(1, 5) for _ in range(total)]
    plan = [[rng.random() < 0.8 for _ in range(n)] for n in sizes]  # True: a cached digest
    uncached = sum(row.count(False) for row in plan)
    with tempfile.TemporaryDirectory(prefix="hallmark-bench-adm-") as tmp_:
        tmp = Path(tmp_)
        data = tmp / "data"
        data.mkdir()
        env = {
            **os.environ,
            "HALLMARK_DATA_DIR": str(data),
            "HALLMARK_PIPELINE__ENABLED": "false",
            "HALLMARK_ACCESS__ANONYMOUS_PULL_DEFAULT": "true",
            "HALLMARK_SERVER__PUBLIC_HOSTS": HOST,
        }
        scheme, verify = "http", None
        if not args.plain_http:
            gen = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hallmark",
                    "tls",
                    "generate",
                    "--hosts",
                    "127.0.0.1",
                    "--out",
                    str(tmp / "tls"),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if gen.returncode != 0:
                raise SystemExit(f"hallmark tls generate failed: {gen.stdout}{gen.stderr}")
            env["HALLMARK_SERVER__TLS_CERT"] = str(tmp / "tls" / "server.crt")
            env["HALLMARK_SERVER__TLS_KEY"] = str(tmp / "tls" / "server.key")
            scheme, verify = "https", ssl.create_default_context(cafile=str(tmp / "tls" / "ca.crt"))
        port = free_port()
        log = open(tmp / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallmark", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"{scheme}://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", verify=verify or True, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {(tmp / 'server.log').read_text()}")
                time.sleep(0.2)
            password = (data / "initial-admin-password").read_text().strip()
            images = HOT_TAGS + uncached
            t0 = time.perf_counter()
            seed(url, verify or True, data / "hallmark.db", images, httpx.BasicAuth("admin", password))
            print(f"seeded {images} approved images in {time.perf_counter() - t0:.1f} s", flush=True)
            hot = [f"{HOST}/bench/app:t{i}" for i in range(HOT_TAGS)]
            fresh = iter(f"{HOST}/bench/app:t{i}" for i in range(HOT_TAGS, images))
            # Warm the cache with the hot digests (what a running cluster has already deployed).
            warm = [deployment(i, [img]) for i, img in enumerate(hot)]
            asyncio.run(load(url, verify or True, warm, 50))
            bodies, cached_refs, fresh_refs = [], 0, 0
            for i, row in enumerate(plan):
                refs = [rng.choice(hot) if cached else next(fresh) for cached in row]
                cached_refs += row.count(True)
                fresh_refs += row.count(False)
                bodies.append(deployment(i, refs))
            lat, errors, elapsed = asyncio.run(load(url, verify or True, bodies, args.rate))
        finally:
            proc.terminate()
            proc.wait(10)
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    print(
        f"admission webhook over {scheme.upper()}: {len(lat)} Deployment reviews"
        f" at {args.rate:g}/s for {args.seconds:g} s"
    )
    print(f"  containers: {cached_refs} on cached digests, {fresh_refs} on digests never seen before")
    print(f"  throughput: {len(lat) / elapsed:.0f} reviews/s; errors: {errors}")
    print(f"  latency ms: p50 {q[49]:.2f}  p90 {q[89]:.2f}  p99 {q[98]:.2f}  max {lat[-1]:.2f}")
    print(f"  target p99 < 20 ms: {'met' if q[98] < 20 and errors == 0 else 'NOT met'}")


if __name__ == "__main__":
    main(sys.argv[1:])

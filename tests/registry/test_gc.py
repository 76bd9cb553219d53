"""Garbage collection against a real server: unused blobs go, used ones stay pullable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.ocihelp import push_blob, push_image, sha256, tar_layer


def _gc(srv: Server, *args: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HALLMARK_DATA_DIR": str(srv.data_dir), **srv.s3_env}
    r = subprocess.run(
        [sys.executable, "-m", "hallmark", "gc", "--json", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _files(srv: Server) -> set[str]:
    return set(srv.blob_store().iterate())


def test_gc_removes_only_unreferenced_blobs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, env={"HALLMARK_PIPELINE__ENABLED": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            keep = push_image(c, "gc/app", "keep", files={"keep.txt": b"keep me"})
            gone = push_image(c, "gc/app", "gone", files={"gone.txt": b"delete me"})
            gone_layer = sha256(tar_layer({"gone.txt": b"delete me"}))
            keep_layer = sha256(tar_layer({"keep.txt": b"keep me"}))
            orphan = push_blob(c, "gc/other", b"pushed but never used by a manifest")
            assert c.delete(f"/v2/gc/app/manifests/{gone}").status_code == 202
            before = _files(srv)
            assert {gone_layer, keep_layer, orphan} <= before
            # Within the grace period nothing goes.
            assert _gc(srv)["deleted"] == []
            dry = _gc(srv, "--dry-run", "--grace-seconds", "0")
            assert gone_layer in dry["deleted"] and orphan in dry["deleted"]
            assert keep_layer not in dry["deleted"]
            assert _files(srv) == before  # a dry run changes nothing
            res = _gc(srv, "--grace-seconds", "0")
            assert set(res["deleted"]) == set(dry["deleted"]) and res["freed_bytes"] > 0
            after = _files(srv)
            assert gone_layer not in after and orphan not in after and keep_layer in after
            # The kept image still pulls completely; the collected blob is unknown now.
            man = c.get("/v2/gc/app/manifests/keep").json()
            for d in [man["config"]["digest"], *(layer["digest"] for layer in man["layers"])]:
                r = c.get(f"/v2/gc/app/blobs/{d}")
                assert r.status_code == 200 and sha256(r.content) == d
            assert c.head(f"/v2/gc/app/blobs/{gone_layer}").status_code == 404
            assert c.get("/v2/gc/app/manifests/keep").headers["Docker-Content-Digest"] == keep
            # Pushing the collected content again works (stored anew).
            assert push_blob(c, "gc/other", b"pushed but never used by a manifest") == orphan
            assert c.get(f"/v2/gc/other/blobs/{orphan}").content == b"pushed but never used by a manifest"
    finally:
        srv.stop()

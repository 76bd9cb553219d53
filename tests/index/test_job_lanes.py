"""Hostile images in the pipeline (issue 11, items 5-6): lanes, recorded cap reasons, odd names.

The pipeline runs in-process on a real data folder (SQLite, filesystem blobs); jobs are run
one at a time by lane, so what waits for what is decided by the queue, not by timing.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.pipeline.service import INDEX_LARGE, Pipeline
from hallmark.registry.service import push_manifest_sync
from tests.ocihelp import OCI_MANIFEST, image, tar_layer


@pytest.fixture
def hallmark(tmp_path: Path) -> Iterator[Hallmark]:
    def make(**index: Any) -> Hallmark:
        env = {f"HALLMARK_INDEX__{k.upper()}": str(v) for k, v in index.items()}
        env["HALLMARK_DATA_DIR"] = str(tmp_path / "data")
        env["HALLMARK_PIPELINE__CONTENT_CHECKS"] = "false"
        return Hallmark.open(load_config(environ=env))

    opened: list[Hallmark] = []

    def factory(**index: Any) -> Hallmark:
        hm = make(**index)
        opened.append(hm)
        return hm

    yield factory  # type: ignore[misc]
    for hm in opened:
        hm.close()


def push(hm: Hallmark, repo: str, layers: list[bytes]) -> str:
    config, manifest = image(layers)
    for blob in [*layers, config]:
        digest, size = hm.blobs.put(blob)
        hm.meta.link_blob(repo, digest, size)
    digest = push_manifest_sync(hm.registry, repo, manifest, OCI_MANIFEST)
    hm.pipeline.on_push(repo, digest)
    return digest


def dpkg(n: int) -> bytes:
    return b"".join(b"Package: p%d\nStatus: install ok installed\nVersion: 1.%d\n\n" % (i, i) for i in range(n))


def run_lane(p: Pipeline, kinds: list[str]) -> int:
    n = 0
    while p.run_one("test", kinds):
        n += 1
    return n


def status(hm: Hallmark, repo: str, digest: str) -> dict[str, Any]:
    img = hm.pipeline.store.get_image(repo, digest)
    assert img is not None
    return img


def test_large_image_waits_in_its_own_lane_and_others_go_first(hallmark: Any) -> None:
    hm: Hallmark = hallmark(large_job_bytes=5000, max_packages_per_image=1000)
    hostile_layer = tar_layer({"var/lib/dpkg/status": dpkg(3000)})
    assert len(hostile_layer) > 5000
    hostile = push(hm, "lanes/hostile", [hostile_layer])  # pushed first
    normal = push(hm, "lanes/normal", [tar_layer({"var/lib/dpkg/status": dpkg(3)})])
    run_lane(hm.pipeline, ["index"])  # the shared lane, as its threads would run it
    assert status(hm, "lanes/normal", normal)["status"] == "indexed"
    waiting = status(hm, "lanes/hostile", hostile)
    assert waiting["status"] == "queued" and "large-job lane" in (waiting["reason"] or "")
    assert run_lane(hm.pipeline, [INDEX_LARGE]) == 1
    failed = status(hm, "lanes/hostile", hostile)
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("index failed: image cap:") and "more than 1000 packages" in failed["reason"]


class SteppingClock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_job_over_its_slice_moves_to_the_large_lane_and_finishes_there(hallmark: Any) -> None:
    hm: Hallmark = hallmark(slice_seconds=5, max_job_seconds=1e9)
    hm.pipeline.clock = SteppingClock(1.0)  # every budget check costs a "second"
    files = {f"f/{i}": b"" for i in range(3000)}
    files["var/lib/dpkg/status"] = dpkg(2)
    digest = push(hm, "slice/app", [tar_layer(files)])
    run_lane(hm.pipeline, hm.pipeline.shared_kinds())
    moved = status(hm, "slice/app", digest)
    assert moved["status"] == "queued" and "longer than 5 seconds" in moved["reason"]
    assert hm.pipeline.cache.get("layer", "2", "sha256:" + "0" * 64) is None
    run_lane(hm.pipeline, [INDEX_LARGE])
    done = status(hm, "slice/app", digest)
    assert done["status"] == "indexed" and done["package_count"] == 2


def test_index_limits_come_from_the_config(hallmark: Any) -> None:
    hm: Hallmark = hallmark(max_entries_per_image=10)
    digest = push(hm, "cfg/app", [tar_layer({f"f{i}": b"" for i in range(20)})])
    run_lane(hm.pipeline, ["index"])
    img = status(hm, "cfg/app", digest)
    assert img["status"] == "failed" and "more than 10 entries in all layers" in img["reason"]


def test_latin1_file_names_are_indexed_and_reported(tmp_path: Path) -> None:
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}  # content checks on: their report carries names too
    hm = Hallmark.open(load_config(environ=env))
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
            for name, data in [
                ("app/caf\xe9.env", b"DATABASE_URL=postgres://appuser:Zx9vQ2mR7pLk4sT8@db.internal:5432/app\n"),
                ("/var/lib/dpkg/status", b"Package: a\nStatus: install ok installed\nVersion: 1\n"),
                ("opt/na\xefve/x-1.0.dist-info/METADATA", b"Name: x\nVersion: 1.0\n"),
            ]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        digest = push(hm, "names/app", [gzip.compress(buf.getvalue(), mtime=0)])
        run_lane(hm.pipeline, ["index"])
        img = status(hm, "names/app", digest)
        assert img["status"] == "indexed", img
        assert img["package_count"] == 2
        sbom = hm.pipeline.store.get_report("names/app", digest, "sbom-cyclonedx")
        assert sbom is not None
        [x] = [c for c in sbom["doc"]["components"] if c["name"] == "x"]
        assert {"name": "hallmark:path", "value": "/opt/na\\xefve/x-1.0.dist-info"} in x["properties"]
        content = hm.pipeline.store.get_report("names/app", digest, "content")
        assert content is not None
        # the content scanner shows such bytes as U+FFFD (hallmark.content.scanner.utf8_clean)
        paths = [f.get("path") or "" for f in content["doc"]["findings"] if f.get("kind") == "secret"]
        assert [p for p in paths if p.startswith("/app/caf") and p.endswith(".env")], paths
    finally:
        hm.close()


def test_serve_runs_the_large_job_lane(tmp_path: Path) -> None:
    """Through a real `hallmark serve`: an image sent to the large-job lane is indexed by its threads."""
    import time

    import httpx

    from tests.conftest import Server
    from tests.ocihelp import push_image

    srv = Server(tmp_path / "data", env={"HALLMARK_INDEX__LARGE_JOB_BYTES": "1"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            digest = push_image(c, "lane/app", "v1", files={"var/lib/dpkg/status": dpkg(2)})
            deadline = time.monotonic() + 120
            img: dict[str, Any] = {}
            while time.monotonic() < deadline:
                r = c.get(f"/api/v1/repositories/lane/app/images/{digest}")
                img = r.json() if r.status_code == 200 else {}
                if img.get("status") in ("indexed", "done", "failed"):
                    break
                time.sleep(0.2)
            assert img.get("status") in ("indexed", "done"), img
            assert img["package_count"] == 2
    finally:
        srv.stop()


def test_index_config_defaults_are_the_limits_defaults() -> None:
    from hallmark.index import Limits

    assert Limits.from_settings(load_config(environ={}).index.model_dump()) == Limits()

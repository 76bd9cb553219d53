"""``hallmark serve`` on S3 (moto's server, its own process): redirected and streamed pulls, upload cleanup."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.storage.s3 import S3BlobStore
from tests.conftest import Server
from tests.ocihelp import push_image, sha256, tar_layer, write_oci_layout
from tests.pipeline.test_pipeline import image_files, wait_for
from tests.s3help import MotoServer, shared_moto

MiB = 1 << 20


@pytest.fixture(scope="module")
def moto() -> MotoServer:
    return shared_moto(Path(tempfile.gettempdir()))


def s3_server(moto: MotoServer, root: Path, redirect: bool, pipeline: bool = False) -> Server:
    data = root / "data"
    data.mkdir(parents=True)
    env = {**moto.env(moto.new_bucket(), redirect=redirect), "HALLMARK_PIPELINE__ENABLED": str(pipeline).lower()}
    return Server(data, env=env).start()


@pytest.fixture(scope="module")
def redirecting(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = s3_server(moto, tmp_path_factory.mktemp("s3redirect"), redirect=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def streaming(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = s3_server(moto, tmp_path_factory.mktemp("s3stream"), redirect=False, pipeline=True)
    yield srv
    srv.stop()


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, check=True, timeout=120)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (make test installs it)")
def test_redirect_307_to_presigned_url_followed_by_skopeo_and_httpx(
    redirecting: Server, moto: MotoServer, tmp_path: Path
) -> None:
    big = tar_layer({"blob.bin": os.urandom(12 * MiB)})  # several multipart parts
    layers = [tar_layer({"etc/hello": b"hello\n"}), big]
    src = tmp_path / "src"
    write_oci_layout(src, "v1", layers)
    ref = f"docker://{redirecting.host}/s3/app:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{src}:v1", ref)

    with httpx.Client(base_url=redirecting.url, timeout=60) as c:
        r = c.get(f"/v2/s3/app/blobs/{sha256(big)}")
        assert r.status_code == 307
        assert r.headers["Location"].startswith(moto.endpoint + "/")
        assert "Signature=" in r.headers["Location"] or "X-Amz-Signature=" in r.headers["Location"]
        assert httpx.get(r.headers["Location"], timeout=60).content == big
        head = c.head(f"/v2/s3/app/blobs/{sha256(big)}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(big))

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", ref, f"oci:{out}:v1")
    for layer in layers:
        assert (out / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()).read_bytes() == layer


def test_streamed_pull_serves_bytes_and_ranges(streaming: Server) -> None:
    data = os.urandom(3 * MiB + 17)
    digest = sha256(data)
    with httpx.Client(base_url=streaming.url, timeout=60) as c:
        loc = c.post("/v2/s3/stream/blobs/uploads/").headers["Location"]
        assert c.put(loc, params={"digest": digest}, content=data).status_code == 201
        r = c.get(f"/v2/s3/stream/blobs/{digest}")
        assert r.status_code == 200 and r.content == data and r.headers["Docker-Content-Digest"] == digest
        r = c.get(f"/v2/s3/stream/blobs/{digest}", headers={"Range": "bytes=1048570-1048599"})
        assert r.status_code == 206 and r.content == data[1048570:1048600]
        assert r.headers["Content-Range"] == f"bytes 1048570-1048599/{len(data)}"
        assert c.get(f"/v2/s3/stream/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
        assert c.get(f"/v2/s3/stream/blobs/{sha256(b'absent')}").status_code == 404


def test_indexer_reads_layers_from_s3(streaming: Server) -> None:
    """The pipeline indexes an image whose layers live only in the bucket, and stores its SBOMs there."""
    with httpx.Client(base_url=streaming.url, timeout=60) as c:
        digest = push_image(c, "s3/indexed", "v1", files=image_files("11", "bullseye"))
        assert wait_for(c, "s3/indexed", digest)["status"] == "done"
        sbom = c.get(f"/api/v1/repositories/s3/indexed/images/{digest}/reports/sbom-cyclonedx").json()
        assert {comp["name"] for comp in sbom["components"]} >= {"libssl1.1", "jinja2"}
    assert streaming.data_dir.joinpath("blobs").exists() is False  # nothing went to the data folder


def test_chunked_upload_alternating_between_two_serve_processes(streaming: Server) -> None:
    """Two ``hallmark serve`` processes on one bucket: PATCHes alternate, either one finishes it."""
    other = Server(streaming.data_dir, env=streaming.extra_env).start()
    try:
        sizes = [6 * MiB + 1, 1000, 2 * MiB, 9 * MiB, 77]
        chunks = [os.urandom(n) for n in sizes]
        data = b"".join(chunks)
        replicas = [httpx.Client(base_url=s.url, timeout=60) for s in (streaming, other)]
        loc = replicas[0].post("/v2/s3/replicas/blobs/uploads/").headers["Location"]
        offset = 0
        for i, chunk in enumerate(chunks):
            c = replicas[i % 2]
            end = offset + len(chunk) - 1
            r = c.patch(loc, content=chunk, headers={"Content-Range": f"{offset}-{end}"})
            assert r.status_code == 202 and r.headers["Range"] == f"0-{end}", r.text
            offset += len(chunk)
            assert replicas[(i + 1) % 2].get(loc).headers["Range"] == f"0-{end}"
        assert replicas[1].put(loc, params={"digest": sha256(data)}).status_code == 201
        for c in replicas:
            assert c.get(f"/v2/s3/replicas/blobs/{sha256(data)}").content == data
            c.close()
    finally:
        other.stop()


def test_abandoned_multipart_upload_is_aborted_by_cleanup(streaming: Server) -> None:
    """A chunked push left half way holds an S3 multipart upload; the expiry sweep aborts it."""
    with httpx.Client(base_url=streaming.url, timeout=60) as c:
        loc = c.post("/v2/s3/abandoned/blobs/uploads/").headers["Location"]
        chunk = os.urandom(9 * MiB)
        assert c.patch(loc, content=chunk, headers={"Content-Range": f"0-{len(chunk) - 1}"}).status_code == 202
    store = streaming.blob_store()
    assert isinstance(store, S3BlobStore)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert len(uploads) == 1
    env = {"HALLMARK_DATA_DIR": str(streaming.data_dir), **streaming.extra_env}
    hm = Hallmark.open(load_config(environ=env))
    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=hm.config.registry.upload_expiry_seconds + 60)
        assert hm.registry.cleanup_uploads(now=later) >= 1
    finally:
        hm.close()
    assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert list(store.list_uploads()) == []


def test_missing_bucket_is_a_clear_retryable_error(moto: MotoServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    bucket = moto.new_bucket()  # there at the start (a missing one fails it: tests/storage/test_s3_faults.py)
    srv = Server(data, env={**moto.env(bucket), "HALLMARK_PIPELINE__ENABLED": "false"}).start()
    try:
        moto.client().delete_bucket(Bucket=bucket)  # then gone
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            blob = b"nowhere to go"
            r = c.post("/v2/s3/nobucket/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
            assert r.status_code == 503 and r.headers["Retry-After"]
            (err,) = r.json()["errors"]
            assert err["code"] == "UNAVAILABLE" and bucket in err["message"]
            assert "does not exist" in err["message"] and moto.env("x")["HALLMARK_STORAGE__SECRET_KEY"] not in r.text
            assert c.get(f"/v2/s3/nobucket/blobs/{sha256(blob)}").status_code == 404
    finally:
        srv.stop()

"""The S3 driver against a real S3 protocol server (moto's, its own process: tests/s3help.py)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hallmark.config import StorageConfig
from hallmark.storage.base import BlobNotFound, DigestMismatch, UploadNotFound
from hallmark.storage.s3 import MIN_PART, S3BlobStore
from tests.s3help import ACCESS_KEY, SECRET_KEY, MotoServer, shared_moto

MiB = 1 << 20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def moto() -> MotoServer:
    return shared_moto(Path(tempfile.gettempdir()))


def make_store(moto: MotoServer, bucket: str, **kw: Any) -> S3BlobStore:
    return S3BlobStore(bucket, "reg", moto.endpoint, "us-east-1", True, ACCESS_KEY, SECRET_KEY, **kw)


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket()


@pytest.fixture
def replicas(moto: MotoServer, bucket: str) -> Iterator[tuple[S3BlobStore, S3BlobStore]]:
    """Two stores on one bucket, as two registry processes with no shared disk."""
    yield make_store(moto, bucket), make_store(moto, bucket)


def keys(store: S3BlobStore, under: str) -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(under))
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def open_multipart(store: S3BlobStore) -> list[dict[str, Any]]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


def test_chunked_upload_alternating_replicas(replicas: tuple[S3BlobStore, S3BlobStore]) -> None:
    sizes = [100_000, 6 * MiB + 7, 3, 2 * MiB, 9 * MiB + 1, 50_000, 4 * MiB]
    chunks = [os.urandom(n) for n in sizes]
    upload_id = "up" + os.urandom(8).hex()
    for i, chunk in enumerate(chunks):
        store = replicas[i % 2]
        w = store.writer(upload_id, resume=i > 0)
        assert w.size == sum(sizes[:i])
        w.write(chunk)
        w.close()  # the PATCH ends: everything needed to go on is in the bucket
        assert replicas[(i + 1) % 2].upload_size(upload_id) == sum(sizes[: i + 1])
    # S3 multipart: every part but the last at least 5 MiB, small PATCHes re-combined.
    (mpu,) = open_multipart(replicas[0])
    parts = replicas[0].client.list_parts(Bucket=replicas[0].bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
    assert parts["Parts"] and all(p["Size"] >= MIN_PART for p in parts["Parts"])
    data = b"".join(chunks)
    assert replicas[0].stat(sha(data)) is None  # nothing visible before the commit
    w = replicas[1].writer(upload_id, resume=True)
    assert w.commit(sha(data)) == len(data)
    with replicas[0].open(sha(data)) as f:
        assert f.read() == data
    assert list(replicas[0].iterate()) == [sha(data)]
    assert keys(replicas[0], "_uploads/") == [] and open_multipart(replicas[0]) == []


def drop_hash_state(store: S3BlobStore, upload_id: str) -> None:
    """As if the session was saved by a process that could not export its running hash."""
    key = store.upload_key(upload_id, "state")
    doc = orjson.loads(store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    store.client.put_object(Bucket=store.bucket, Key=key, Body=orjson.dumps({**doc, "hash": None}))


def test_resume_without_hash_state_rehashes(replicas: tuple[S3BlobStore, S3BlobStore]) -> None:
    """A replica that cannot restore the running hash verifies the completed object instead."""
    a, b = replicas
    data = os.urandom(11 * MiB)
    for upload_id, digest in (("nohash-bad", sha(b"other")), ("nohash-good", sha(data))):
        w = a.writer(upload_id, resume=False)
        w.write(data[: 7 * MiB])
        w.close()
        drop_hash_state(a, upload_id)
        w = b.writer(upload_id, resume=True)
        w.write(data[7 * MiB :])
        if digest != sha(data):
            with pytest.raises(DigestMismatch):
                w.commit(digest)
            assert list(a.iterate()) == [] and open_multipart(a) == [] and keys(a, "") == []
        else:
            assert w.commit(digest) == len(data)
    assert list(b.iterate()) == [sha(data)] and keys(a, "_uploads/") == []


@pytest.mark.parametrize("size", [1000, 13 * MiB])
def test_digest_mismatch_leaves_nothing(replicas: tuple[S3BlobStore, S3BlobStore], size: int) -> None:
    store = replicas[0]
    data = os.urandom(size)
    with pytest.raises(DigestMismatch):
        store.put(data, sha(b"something else"))
    w = store.writer("mismatch-up", resume=False)
    w.write(data)
    w.close()
    w = replicas[1].writer("mismatch-up", resume=True)
    with pytest.raises(DigestMismatch):
        w.commit(sha(b"not this"))
    assert list(store.iterate()) == [] and store.stat(sha(data)) is None
    assert store.upload_size("mismatch-up") == size  # still resumable, as on the filesystem
    w.cancel()
    assert keys(store, "") == [] and open_multipart(store) == []


def test_abandoned_uploads_listed_and_aborted(replicas: tuple[S3BlobStore, S3BlobStore]) -> None:
    store = replicas[0]
    w = store.writer("abandoned-1", resume=False)
    w.write(os.urandom(9 * MiB))
    w.close()
    # A process killed between starting the multipart upload and saving any state.
    store.client.create_multipart_upload(Bucket=store.bucket, Key=store.upload_key("abandoned-2", "data"))
    listed = dict(store.list_uploads())
    assert set(listed) == {"abandoned-1", "abandoned-2"}
    for upload_id in listed:
        replicas[1].delete_upload(upload_id)
    assert open_multipart(store) == [] and keys(store, "") == [] and list(store.list_uploads()) == []
    with pytest.raises(UploadNotFound):
        store.writer("abandoned-1", resume=True)


def test_gc_steps_open_and_seek(replicas: tuple[S3BlobStore, S3BlobStore]) -> None:
    a, b = replicas
    data = os.urandom(3 * MiB)
    digest, size = a.put(data)
    assert (digest, size) == (sha(data), len(data)) and b.local_path(digest) is None
    with b.open(digest) as f:
        f.seek(MiB + 5)
        assert f.read(10) == data[MiB + 5 : MiB + 15]
        f.seek(0)
        assert f.read() == data
    assert b.trash(digest) and a.stat(digest) is None and list(a.iterate()) == []
    with pytest.raises(BlobNotFound):
        a.open(digest)
    b.untrash(digest)
    assert a.stat(digest) == size
    assert a.trash(digest)
    a.purge(digest)
    b.untrash(digest)  # nothing left to put back
    assert a.stat(digest) is None and keys(a, "") == []
    assert not a.trash(digest)


def test_config_needs_bucket_and_hides_secrets() -> None:
    with pytest.raises(ValueError, match="bucket"):
        StorageConfig(driver="s3")
    with pytest.raises(ValueError, match="http"):
        StorageConfig(driver="s3", bucket="b", endpoint="minio:9000")
    cfg = StorageConfig(driver="s3", bucket="b", access_key="AKIAEXAMPLE", secret_key="very-secret")
    assert "very-secret" not in repr(cfg)
    assert "very-secret" not in repr(S3BlobStore.from_config(cfg))


def test_commit_many_reports_each_upload(replicas: tuple[S3BlobStore, S3BlobStore]) -> None:
    store = replicas[0]
    blobs = [os.urandom(1000 + i) for i in range(5)]
    writers = []
    for i, data in enumerate(blobs):
        w = store.writer(f"group-{i:04d}", resume=False)
        w.write(data)
        writers.append(w)
    digests = [sha(d) for d in blobs]
    digests[2] = sha(b"wrong")
    results = store.commit_many(list(zip(writers, digests, strict=True)))
    assert [r if isinstance(r, int) else type(r) for r in results] == [1000, 1001, DigestMismatch, 1003, 1004]
    assert set(store.iterate()) == {sha(blobs[i]) for i in (0, 1, 3, 4)}

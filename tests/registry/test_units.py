"""In-process checks of the pieces under the HTTP layer: config, blob store, upload expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hallmark.app import Hallmark
from hallmark.config import ConfigError, load_config
from hallmark.digest import StreamHasher, digest_bytes
from hallmark.registry.sessions import UploadIds, load_key
from hallmark.storage import DigestMismatch, FilesystemBlobStore
from hallmark.storage.base import UploadNotFound


def test_config_layers_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "hallmark.toml"
    f.write_text('data_dir = "/srv/x"\n[registry]\ndelete_enabled = false\n')
    cfg = load_config(f, environ={"HALLMARK_LISTEN": "0.0.0.0:6000", "HALLMARK_REGISTRY__UPLOAD_EXPIRY_SECONDS": "120"})
    assert cfg.data_dir == "/srv/x" and cfg.registry.delete_enabled is False
    assert cfg.server.listen == "0.0.0.0:6000" and cfg.registry.upload_expiry_seconds == 120
    cfg = load_config(f, overrides={("data_dir",): "/cli/wins"}, environ={"HALLMARK_DATA_DIR": "/env"})
    assert cfg.data_dir == "/cli/wins"
    with pytest.raises(ConfigError, match=r"server\.listen"):
        load_config(environ={"HALLMARK_LISTEN": "nonsense"})
    with pytest.raises(ConfigError, match=r"registry\.bogus"):
        load_config(environ={"HALLMARK_REGISTRY__BOGUS": "1"})
    with pytest.raises(ConfigError, match="upload_expiry_seconds"):
        load_config(environ={"HALLMARK_REGISTRY__UPLOAD_EXPIRY_SECONDS": "abc"})
    bad = tmp_path / "bad.toml"
    bad.write_text("this is [not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_blob_store_verifies_and_publishes_atomically(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    w = store.writer("upload-0001")
    w.write(b"hello ")
    w.flush()
    assert store.upload_size("upload-0001") == 6
    assert list(store.iterate()) == []
    # Resume in a "new process": the running hash is rebuilt from disk.
    w.close()
    w2 = store.writer("upload-0001", resume=True)
    w2.write(b"world")
    with pytest.raises(DigestMismatch):
        w2.commit(digest_bytes(b"other"))
    assert list(store.iterate()) == []
    digest = digest_bytes(b"hello world")
    assert w2.commit(digest) == 11
    assert list(store.iterate()) == [digest]
    assert store.open(digest).read() == b"hello world"
    assert store.upload_size("upload-0001") is None
    # Same content again: stored once, upload file removed.
    assert store.put(b"hello world") == (digest, 11)
    assert list(store.iterate()) == [digest]
    assert list(store.list_uploads()) == []
    with pytest.raises(UploadNotFound):
        store.writer("../../escape", resume=True)


@pytest.mark.parametrize("split", [0, 1, 55, 56, 64, 65, 1000, 4097])
def test_stream_hasher_state_round_trip(split: int) -> None:
    data = os.urandom(5000)
    h = StreamHasher()
    h.update(data[:split])
    state = h.state()
    if not StreamHasher.resumable():
        pytest.skip("libcrypto's SHA256_* not available: uploads fall back to re-reading")
    assert state is not None
    resumed = StreamHasher(state)
    assert resumed.size == split
    resumed.update(memoryview(data)[split:])
    assert resumed.digest() == digest_bytes(data)
    assert resumed.digest() == digest_bytes(data)  # digest() does not finalise the running state
    with pytest.raises(ValueError):
        StreamHasher(state[:-1])


def test_resume_takes_the_saved_hash_state_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    w = store.writer("upload-0002")
    w.write(b"first ")
    w.flush()  # end of a PATCH: the running hash is saved beside the upload
    w.close()
    if StreamHasher.resumable():
        assert store.state_path("upload-0002").exists()
    w2 = store.writer("upload-0002", resume=True)
    assert w2._load_state() is not None or not StreamHasher.resumable()
    w2.write(b"second ")
    w2.close()  # appended without saving: the saved state no longer matches the file
    w3 = store.writer("upload-0002", resume=True)
    assert w3._load_state() is None
    w3.write(b"third")
    w3.flush()
    # The hash rebuilt from the file covers every part.
    assert w3.commit(digest_bytes(b"first second third")) == 18
    assert not store.state_path("upload-0002").exists()
    w4 = store.writer("upload-0003")
    w4.write(b"x")
    w4.flush()
    store.delete_upload("upload-0003")
    assert not store.state_path("upload-0003").exists()


@pytest.mark.parametrize("direct", [True, False])
def test_writer_keeps_every_byte_across_alignments_and_resumes(tmp_path: Path, direct: bool) -> None:
    """Direct I/O writes whole blocks and carries tails; any split of the body must round-trip."""
    rng = random.Random(20261125 + direct)
    for trial in range(12):
        store = FilesystemBlobStore(tmp_path / f"{direct}-{trial}")
        store.direct_io = direct
        data = rng.randbytes(rng.randint(0, 3 << 20))
        w = store.writer("upload-0004")
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 100, 4095, 4096, 5000, 1 << 20, (1 << 20) + 3, 9 << 20])
            chunk = data[pos : pos + n]
            parts = [chunk[k : k + 70_001] for k in range(0, len(chunk), 70_001)]
            w.write_parts(parts)
            pos += len(chunk)
            if rng.random() < 0.3:  # end of a PATCH; the next one may land on another process
                w.flush()
                assert store.upload_size("upload-0004") == pos
                w.close()
                w = store.writer("upload-0004", resume=True)
        digest = digest_bytes(data)
        assert w.commit(digest) == len(data)
        assert store.open(digest).read() == data


def test_writer_falls_back_to_buffered_writes_without_o_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    real = fcntl.fcntl

    def no_direct(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    store = FilesystemBlobStore(tmp_path)
    assert store.direct_io
    data = os.urandom((2 << 20) + 123)
    assert store.put([data[:1000], data[1000:]]) == (digest_bytes(data), len(data))
    assert not store.direct_io
    assert store.open(digest_bytes(data)).read() == data


@pytest.mark.parametrize("syncfs", [True, False])
def test_group_commit_reports_each_upload_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    from hallmark.storage import filesystem

    if not syncfs:
        monkeypatch.setattr(filesystem, "_SYNCFS", None)  # per-file fsync, as on a busy filesystem
    store = FilesystemBlobStore(tmp_path)
    contents = [os.urandom(n) for n in (0, 10, 5000, 70_000)]
    writers = []
    for i, data in enumerate(contents):
        w = store.writer(f"group-{i:04d}")
        w.write(data)
        writers.append(w)
    digests = [digest_bytes(c) for c in contents]
    digests[2] = digest_bytes(b"something else")  # one client lies about its digest
    results = store.commit_many(list(zip(writers, digests, strict=True)))
    assert results[0] == 0 and results[1] == 10 and results[3] == 70_000
    assert isinstance(results[2], DigestMismatch)
    assert sorted(store.iterate()) == sorted(digests[i] for i in (0, 1, 3))
    for i in (0, 1, 3):
        assert store.open(digests[i]).read() == contents[i]
    # The refused upload is untouched and can still be finished with the right digest.
    assert store.upload_size("group-0002") == 5000
    assert writers[2].commit(digest_bytes(contents[2])) == 5000


def test_expired_uploads_are_cleaned(tmp_path: Path) -> None:
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_REGISTRY__UPLOAD_EXPIRY_SECONDS": "3600"})
    hm = Hallmark.open(cfg)
    try:

        async def body(data: bytes) -> AsyncIterator[bytes]:
            yield data

        async def start() -> tuple[str, str]:
            ids = await hm.registry.start_upload("exp/repo"), await hm.registry.start_upload("exp/repo")
            for upload_id in ids:  # sessions are recorded once data is written to them
                await hm.registry.patch_upload("exp/repo", upload_id, body(b"part"), None, 4)
            return ids

        old, fresh = asyncio.run(start())
        # An orphaned partial file with no session (e.g. a killed monolithic push).
        orphan = hm.blobs.writer("orphan-upload-1")
        orphan.write(b"partial")
        orphan.close()
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).timestamp()
        os.utime(cfg.blob_path / "uploads" / "orphan-upload-1", (past, past))
        with hm.meta.engine.begin() as conn:
            from hallmark.metadata.tables import uploads

            conn.execute(
                uploads.update()
                .where(uploads.c.id == old)
                .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
            )
        assert hm.registry.cleanup_uploads() == 2
        assert hm.meta.get_upload(old) is None and hm.blobs.upload_size(old) is None
        assert hm.meta.get_upload(fresh) is not None and hm.blobs.upload_size(fresh) == 4
        assert hm.blobs.upload_size("orphan-upload-1") is None
    finally:
        hm.close()


def test_upload_ids_are_the_servers_own_bound_to_their_repository_and_age(tmp_path: Path) -> None:
    from hallmark.registry.errors import RegistryError

    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_REGISTRY__UPLOAD_EXPIRY_SECONDS": "3600"})
    hm = Hallmark.open(cfg)
    svc = hm.registry
    try:

        async def body(data: bytes) -> AsyncIterator[bytes]:
            yield data

        async def scenario() -> None:
            upload_id = await svc.start_upload("ids/a")
            assert hm.meta.get_upload(upload_id) is None  # opening a session stores nothing
            assert await svc.upload_status("ids/a", upload_id) == 0
            for repo, bad in [
                ("ids/b", upload_id),  # another repository
                ("ids/a", upload_id[:-2] + ("AA" if upload_id[-2:] != "AA" else "BB")),  # forged
                ("ids/a", "0123456789abcdef0123456789abcdef"),  # made up
                ("ids/a", svc.upload_ids.new("ids/a", now=dt.datetime.now(dt.UTC).timestamp() - 7200)),  # expired
            ]:
                with pytest.raises(RegistryError) as err:
                    await svc.upload_status(repo, bad)
                assert err.value.code == "BLOB_UPLOAD_UNKNOWN"
            info = await svc.finish_upload("ids/a", upload_id, digest_bytes(b"blob"), body(b"blob"), None, 4)
            assert info.size == 4
            # A finished session is a tombstone: its id is refused from now on.
            for call in (svc.upload_status("ids/a", upload_id), svc.cancel_upload("ids/a", upload_id)):
                with pytest.raises(RegistryError) as err:
                    await call
                assert err.value.code == "BLOB_UPLOAD_UNKNOWN"
            cancelled = await svc.start_upload("ids/a")
            await svc.cancel_upload("ids/a", cancelled)
            with pytest.raises(RegistryError):
                await svc.patch_upload("ids/a", cancelled, body(b"x"), None, 1)
            assert hm.blobs.upload_size(cancelled) is None
            # Another server process (same database) recognises the id.
            other = UploadIds(load_key(hm.meta))
            fresh = await svc.start_upload("ids/a")
            assert other.created(fresh, "ids/a") is not None
            assert UploadIds().created(fresh, "ids/a") is None

        asyncio.run(scenario())
    finally:
        hm.close()


def test_gc_puts_back_a_blob_linked_while_it_was_collected(tmp_path: Path) -> None:
    from hallmark.registry.gc import collect

    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path)}))
    try:
        digest, size = hm.blobs.put(b"x" * 100)
        hm.meta.link_blob("race/a", digest, size)
        assert hm.meta.unlink_blob("race/a", digest)
        original = hm.blobs.trash

        def racing_trash(digest: str) -> bool:  # named like BlobStore.trash's parameter
            moved = original(digest)
            hm.meta.link_blob("race/b", digest, size)  # a push of the same content lands meanwhile
            return moved

        hm.blobs.trash = racing_trash  # type: ignore[method-assign]
        res = collect(hm.meta, hm.blobs, grace_seconds=0)
        assert res.kept == [digest] and res.deleted == []
        assert hm.blobs.stat(digest) == 100 and hm.meta.blob_size("race/b", digest) == 100
        hm.blobs.trash = original  # type: ignore[method-assign]
        assert hm.meta.unlink_blob("race/b", digest)
        res = collect(hm.meta, hm.blobs, grace_seconds=0)
        assert res.deleted == [digest] and hm.blobs.stat(digest) is None
    finally:
        hm.close()


@pytest.mark.parametrize("mode", ["sendfile", "copy"])
def test_blob_body_senders_deliver_the_exact_range(tmp_path: Path, mode: str) -> None:
    """Both ways of sending a blob (sendfile to remote clients, copies to loopback ones)."""
    import socket
    import threading

    from hallmark.registry.sendfile import copy_all, sendfile_all

    data = os.urandom(5 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    offset, count = 12345, len(data) - 12345 - 99
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # as under the event loop: the sender must wait for room itself
    received = bytearray()

    def reader() -> None:
        while len(received) < count:
            chunk = theirs.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)
            time.sleep(0.0005)  # a slow client: the socket buffer fills up

    t = threading.Thread(target=reader)
    t.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        (sendfile_all if mode == "sendfile" else copy_all)(ours.fileno(), fd, offset, count)
    finally:
        os.close(fd)
    t.join(30)
    ours.close()
    theirs.close()
    assert bytes(received) == data[offset : offset + count]


def test_only_loopback_clients_get_the_copying_sender() -> None:
    from hallmark.registry.sendfile import is_loopback

    assert is_loopback(("127.0.0.1", 40000))
    assert is_loopback(("127.8.9.10", 40000))
    assert is_loopback(("::1", 40000, 0, 0))
    assert not is_loopback(("10.1.2.3", 40000))
    assert not is_loopback(("2001:db8::1", 40000, 0, 0))
    assert not is_loopback(None)
    assert not is_loopback("/run/hallmark.sock")

"""Uploads to an S3 bucket: the session writer of :class:`hallmark.storage.s3.S3BlobStore`.

Apart from the driver (reads, listings, deletes) because a session is its own protocol:
an S3 multipart upload under ``_uploads/<id>/data`` (key layout: :mod:`hallmark.storage.s3`),
its state kept in the bucket so any replica can continue it.

Nothing becomes visible before it verified: the running sha256 is compared with the
digest the client named *before* the last part is sent and the multipart upload
completed, and the verified object is then copied to ``blobs/...`` (server-side), as the
CNCF registry's S3 driver moves ``_uploads/<id>/data`` into place. Small blobs that never
needed a part are put straight to their final key after the in-memory check (one PUT is
atomic in S3).

Chunked uploads move between replicas: parts are >= 5 MiB (S3's minimum except for the
last), smaller PATCHes stay in a trailing ``tail`` object that the next writer, on any
replica, reads back and re-combines with new data (as the CNCF driver does). The running
sha256 travels in the state object: :class:`hallmark.digest.StreamHasher` exports
OpenSSL's SHA256_CTX. The ``rehash`` package (pickleable hashlib) was tried and refuses
OpenSSL 3 (``NotImplementedError``), which Python 3.11 on Debian links. Where no state can
be exported, the other fallback is used: parts of an unfinished multipart upload cannot
be read back, so the completed ``data`` object is re-read and hashed before it is copied
into place (correct, costs one read of the blob). A sha512 digest named at the end takes
the same path.
"""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.digest import ALGORITHMS, StreamHasher, parse_digest
from hallmark.storage.base import DigestMismatch, UploadNotFound

if TYPE_CHECKING:
    from hallmark.storage.s3 import S3BlobStore

UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # session ids the driver accepts (keys under _uploads/)
MIN_PART = 5 << 20  # S3's smallest part (except the last)
PART = 8 << 20  # parts sent while streaming; doubled every 2000 parts (S3 allows 10000)
# Parts of one upload in flight at once (each holds its bytes in memory until sent).
_IN_FLIGHT = 4
_PART_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-s3-part")


class S3Writer:
    """One upload session. Its state lives in the bucket after :meth:`flush`, not in this process."""

    def __init__(self, store: S3BlobStore, upload_id: str, resume: bool) -> None:
        if not UPLOAD_ID_RE.match(upload_id):
            raise UploadNotFound(upload_id)
        self.upload_id = upload_id
        self._s = store
        self._hasher: StreamHasher | None = StreamHasher()
        self._size = 0
        self._buf = bytearray()  # written, not yet in a part
        self._mpu: str | None = None
        self._parts: list[dict[str, Any]] = []  # {"PartNumber", "ETag", "Size"}
        self._gen = 0
        self._tail_key: str | None = None
        self._saved = (0, 0)  # (size, parts) at the last flush: nothing to do when unchanged
        self._closed = False
        self._sending: list[Future[dict[str, Any]]] = []  # parts on their way, in part-number order
        # A part that failed leaves this writer's view ahead of the bucket: it must not save that.
        self._broken = False
        if resume:
            self._load()

    @property
    def size(self) -> int:
        return self._size

    def running_digest(self) -> str:
        """sha256 of everything written so far (this writer hashed all of it)."""
        if self._hasher is None:
            raise ValueError("no running hash for a resumed upload without hash state")
        return self._hasher.digest()

    def _load(self) -> None:
        doc = self._s.read_state(self.upload_id)
        if doc is None:
            raise UploadNotFound(self.upload_id)
        self._size = int(doc["size"])
        self._mpu = doc.get("mpu")
        self._parts = list(doc.get("parts") or [])
        self._gen = int(doc.get("gen", 0))
        self._tail_key = doc.get("tail")
        if self._tail_key:
            body = self._s.get_bytes(self._tail_key)
            if body is None or len(body) != int(doc.get("tail_size", -1)):
                raise UploadNotFound(self.upload_id)
            self._buf = bytearray(body)
        state = doc.get("hash")
        self._hasher = None
        if state and StreamHasher.resumable():
            hasher = StreamHasher(bytes.fromhex(state))
            if hasher.size == self._size:
                self._hasher = hasher
        self._saved = (self._size, len(self._parts))

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_parts([bytes(chunk)] if isinstance(chunk, memoryview) else [chunk])

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        if self._broken:
            raise ValueError("an earlier part failed: resume the upload from its saved state")

    def write_parts(self, parts: list[bytes]) -> None:
        self._check_open()
        for part in parts:
            if self._hasher is not None:
                self._hasher.update(part)
            self._buf += part
            self._size += len(part)
        while len(self._buf) >= self._part_size():
            n = self._part_size()
            self._send_part(self._buf[:n])
            del self._buf[:n]

    def _part_size(self) -> int:
        return PART << ((len(self._parts) + len(self._sending)) // 2000)

    def _send_part(self, data: bytes | bytearray) -> None:
        """Start sending one part; up to ``_IN_FLIGHT`` go at once while the body keeps streaming in."""
        c, bucket = self._s.client, self._s.bucket
        key = self._s.upload_key(self.upload_id, "data")
        try:
            if self._mpu is None:
                self._mpu = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            number = len(self._parts) + len(self._sending) + 1
            if number > 10_000:
                raise ValueError("upload exceeds S3's 10000 parts")
            body, mpu = bytes(data), self._mpu

            def send() -> dict[str, Any]:
                resp = c.upload_part(Bucket=bucket, Key=key, UploadId=mpu, PartNumber=number, Body=body)
                return {"PartNumber": number, "ETag": resp["ETag"], "Size": len(body)}

            self._sending.append(_PART_POOL.submit(send))
            if len(self._sending) >= _IN_FLIGHT:
                self._parts.append(self._sending.pop(0).result())
        except BaseException:
            self._broken = True
            raise

    def _drain(self) -> None:
        """Wait for the parts on their way (in order); any failure breaks the writer."""
        try:
            while self._sending:
                self._parts.append(self._sending.pop(0).result())
        except BaseException:
            self._broken = True
            for fut in self._sending:
                fut.cancel()
            self._sending.clear()
            raise

    def flush(self) -> None:
        """Persist the session in the bucket so any replica can continue it."""
        if self._closed:
            return
        self._check_open()
        if len(self._buf) >= MIN_PART:
            self._send_part(self._buf)
            self._buf = bytearray()
        self._drain()
        if self._saved == (self._size, len(self._parts)):
            return
        old_tail = self._tail_key
        self._tail_key = None
        if self._buf:
            self._gen += 1
            self._tail_key = self._s.upload_key(self.upload_id, f"tail-{self._gen}")
            self._s.client.put_object(Bucket=self._s.bucket, Key=self._tail_key, Body=bytes(self._buf))
        state = self._hasher.state() if self._hasher is not None else None
        doc = {
            "size": self._size,
            "mpu": self._mpu,
            "parts": self._parts,
            "gen": self._gen,
            "tail": self._tail_key,
            "tail_size": len(self._buf),
            "hash": state.hex() if state is not None else None,
        }
        self._s.client.put_object(
            Bucket=self._s.bucket, Key=self._s.upload_key(self.upload_id, "state"), Body=orjson.dumps(doc)
        )
        if old_tail and old_tail != self._tail_key:
            self._s.delete_key(old_tail)
        self._saved = (self._size, len(self._parts))

    def commit(self, expected_digest: str) -> int:
        algo, _ = parse_digest(expected_digest)
        self._check_open()
        verified = False
        if self._hasher is not None and algo == "sha256":
            actual = self._hasher.digest()
            if actual != expected_digest:
                raise DigestMismatch(expected_digest, actual)  # the session stays resumable
            verified = True
        final = self._s.blob_key(expected_digest)
        if self._mpu is None:
            # Everything is in memory: check it here, then one atomic PUT under the final key.
            if not verified:
                actual = f"{algo}:{ALGORITHMS[algo](self._buf).hexdigest()}"
                if actual != expected_digest:
                    raise DigestMismatch(expected_digest, actual)
            with self._s.publishing(final):
                self._s.client.put_object(Bucket=self._s.bucket, Key=final, Body=bytes(self._buf))
        else:
            if self._buf:
                self._send_part(self._buf)  # the last part may be smaller than 5 MiB
                self._buf = bytearray()
            self._drain()
            data_key = self._s.upload_key(self.upload_id, "data")
            parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in self._parts]
            self._s.client.complete_multipart_upload(
                Bucket=self._s.bucket, Key=data_key, UploadId=self._mpu, MultipartUpload={"Parts": parts}
            )
            self._mpu = None
            if not verified:
                actual = self._s.hash_key(data_key, algo)
                if actual != expected_digest:
                    self._s.delete_upload(self.upload_id)
                    self._closed = True
                    raise DigestMismatch(expected_digest, actual)
            with self._s.publishing(final):
                self._s.copy_key(data_key, final, self._size)
        size = self._size
        self._s.delete_upload(self.upload_id)
        self._closed = True
        return size

    def close(self) -> None:
        try:
            if not self._broken:
                self.flush()
        finally:
            self._closed = True

    def cancel(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._drain()
        self._s.delete_upload(self.upload_id)

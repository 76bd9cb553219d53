"""S3-compatible blob driver (AWS S3, MinIO, Ceph radosgw, ...): blobs in a bucket, no shared disk.

Why boto3: it is the reference S3 client, kept current with the protocol (SigV4, virtual
host and path style, checksums, the standard AWS credential chain: environment, shared
config, instance/pod roles) and retries throttling (503 SlowDown) and timeouts with
backoff in its "standard" retry mode. aiobotocore would need its own event-loop
plumbing while every storage call here already runs on the registry's thread pool;
the MinIO SDK lacks the AWS credential chain.

Keys, under ``prefix``::

    blobs/<algo>/<hex>        published, verified blobs (what ``iterate`` lists)
    _trash/<algo>-<hex>       garbage collection, step 1 (``trash``)
    _uploads/<id>/state       a session's state (JSON): multipart upload id, parts, size, hash state
    _uploads/<id>/tail-<gen>  the trailing bytes (< 5 MiB) not yet sent as a part
    _uploads/<id>/data        the multipart upload's key; completed only after verification
    _shared/<algo>/<hex>      advisory sets and rule bundles for every replica (hallmark.storage.shared)

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

Garbage collection: ``trash`` copies to ``_trash`` and deletes (S3 has no rename); a push
of the same content meanwhile puts the blob back, and the collector's re-check after
trashing untrashes it (content-addressed: either copy is the same bytes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from hallmark.digest import ALGORITHMS, StreamHasher, parse_digest
from hallmark.storage.base import BlobNotFound, BlobWriter, DigestMismatch, StorageUnavailable, UploadNotFound
from hallmark.storage.s3client import is_missing, make_client, unavailable
from hallmark.storage.shared import S3Shared

if TYPE_CHECKING:
    from hallmark.config import StorageConfig

log = logging.getLogger(__name__)
_UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MIN_PART = 5 << 20  # S3's smallest part (except the last)
PART = 8 << 20  # parts sent while streaming; doubled every 2000 parts (S3 allows 10000)
_READ_CHUNK = 1 << 20
_COPY_OBJECT_MAX = 5 << 30
# Group commits (many small blobs at once) are one PUT each: sent side by side, not in turn.
_COMMIT_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-s3-commit")
# Parts of one upload in flight at once (each holds its bytes in memory until sent).
_IN_FLIGHT = 4
_PART_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-s3-part")


class S3Writer:
    """One upload session. Its state lives in the bucket after :meth:`flush`, not in this process."""

    def __init__(self, store: S3BlobStore, upload_id: str, resume: bool) -> None:
        if not _UPLOAD_ID_RE.match(upload_id):
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


class S3Reader(io.RawIOBase):
    """A blob read as a stream, seekable: a seek reopens the GET with a Range from there."""

    def __init__(self, store: S3BlobStore, key: str, size: int) -> None:
        self._s = store
        self._key = key
        self._size = size
        self._pos = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = max(0, base + offset)
        if pos != self._pos:
            self._drop()
            self._pos = pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or not len(view):
            return 0
        if self._body is None:
            try:
                resp = self._s.client.get_object(Bucket=self._s.bucket, Key=self._key, Range=f"bytes={self._pos}-")
            except ClientError as exc:
                if is_missing(exc):
                    raise BlobNotFound(self._key) from exc
                raise
            self._body = resp["Body"]
        try:
            data = self._body.read(len(view))
        except (BotoCoreError, OSError) as exc:
            self._drop()
            raise unavailable(exc, self._s.bucket) from exc
        if not data:
            raise OSError(f"blob {self._key} ended at {self._pos} of {self._size} bytes")
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class S3BlobStore:
    """The :class:`~hallmark.storage.base.BlobStore` interface on an S3 bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
        redirect: bool = False,
        redirect_expiry: int = 600,
        max_attempts: int = 5,
        timeout: float = 60,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.redirect = redirect
        self.redirect_expiry = redirect_expiry
        # Explicit keys when configured; otherwise boto3's chain (environment, ~/.aws, instance/pod role).
        self.client: Any = make_client(
            bucket, endpoint, region, path_style, access_key, secret_key, max_attempts, timeout
        )
        self._publish_locks = [threading.Lock() for _ in range(64)]

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> S3BlobStore:
        if not cfg.bucket:
            raise ValueError("storage.bucket is required for the s3 driver")
        return cls(
            cfg.bucket,
            cfg.prefix,
            cfg.endpoint,
            cfg.region,
            cfg.path_style,
            cfg.access_key,
            cfg.secret_key,
            cfg.redirect,
            cfg.redirect_expiry_seconds,
            cfg.max_attempts,
            cfg.timeout_seconds,
        )

    def __repr__(self) -> str:  # never the credentials
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def publishing(self, key: str) -> threading.Lock:
        """Held while writing a blob's final key: identical pushes in this process publish in turn.

        Every commit still writes its copy (never "already there, skip", for the same reason as
        the filesystem driver's rename); taking turns only keeps simultaneous writes of one key
        off the S3 server, which some S3-compatible servers (moto among them) handle badly.
        """
        return self._publish_locks[zlib.crc32(key.encode()) % len(self._publish_locks)]

    # -- keys ----------------------------------------------------------------------------
    def key(self, rest: str) -> str:
        return f"{self.prefix}/{rest}" if self.prefix else rest

    def blob_key(self, digest: str) -> str:
        algo, hexpart = parse_digest(digest)
        return self.key(f"blobs/{algo}/{hexpart}")

    def trash_key(self, digest: str) -> str:
        algo, hexpart = parse_digest(digest)
        return self.key(f"_trash/{algo}-{hexpart}")

    def upload_key(self, upload_id: str, name: str) -> str:
        if not _UPLOAD_ID_RE.match(upload_id):
            raise UploadNotFound(upload_id)
        return self.key(f"_uploads/{upload_id}/{name}")

    # -- helpers used by the writer ------------------------------------------------------
    def get_bytes(self, key: str) -> bytes | None:
        try:
            return cast(bytes, self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def read_state(self, upload_id: str) -> dict[str, Any] | None:
        """The session's saved state. A body that does not parse (a server answering a GET while
        the same key is being replaced; S3 itself never does) is read again, then an error."""
        key = self.upload_key(upload_id, "state")
        for attempt in range(5):
            raw = self.get_bytes(key)
            if raw is None:
                return None
            try:
                return cast(dict[str, Any], orjson.loads(raw))
            except orjson.JSONDecodeError:
                if attempt == 4:
                    raise StorageUnavailable(f"S3 bucket {self.bucket!r}: unreadable upload state {key}") from None
                time.sleep(0.05 * 2**attempt)  # let the concurrent replacement finish
        return None

    def delete_key(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def copy_key(self, source: str, target: str, size: int | None = None) -> None:
        """Server-side copy: one CopyObject when the size is known to fit (5 GiB), else boto3's
        managed copy (a HEAD, then a multipart copy for large objects)."""
        if size is not None and size <= _COPY_OBJECT_MAX:
            self.client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source})
            return
        self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)

    def hash_key(self, key: str, algo: str) -> str:
        h = ALGORITHMS[algo]()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            while chunk := body.read(_READ_CHUNK):
                h.update(chunk)
        finally:
            body.close()
        return f"{algo}:{h.hexdigest()}"

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    # -- BlobStore -------------------------------------------------------------------------
    def ping(self) -> None:
        """Reachable, credentials accepted, bucket there: one listing of at most one key (not a HEAD of
        the bucket, whose error answers carry no code to say which of these failed)."""
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key("_uploads/"), MaxKeys=1)

    def stat(self, digest: str) -> int | None:
        head = self._head(self.blob_key(digest))
        return int(head["ContentLength"]) if head is not None else None

    def open(self, digest: str) -> BinaryIO:
        size = self.stat(digest)
        if size is None:
            raise BlobNotFound(digest)
        return cast(BinaryIO, io.BufferedReader(S3Reader(self, self.blob_key(digest), size), _READ_CHUNK))

    def local_path(self, digest: str) -> Path | None:
        return None

    def presigned_url(self, digest: str) -> str | None:
        """A time-limited GET URL for the blob when ``redirect`` is on (pulls go to S3 directly)."""
        if not self.redirect:
            return None
        return cast(
            str,
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.blob_key(digest)},
                ExpiresIn=self.redirect_expiry,
            ),
        )

    def put(self, data: bytes | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        w = S3Writer(self, uuid.uuid4().hex, resume=False)
        try:
            for chunk in [data] if isinstance(data, bytes | bytearray) else data:
                w.write(chunk)
            if expected_digest is None:
                expected_digest = w.running_digest()
            size = w.commit(expected_digest)
        except BaseException:
            with contextlib.suppress(Exception):
                w.cancel()
            raise
        return expected_digest, size

    def writer(self, upload_id: str, resume: bool = False) -> S3Writer:
        return S3Writer(self, upload_id, resume)

    def commit_many(self, items: Sequence[tuple[BlobWriter, str]]) -> list[int | Exception]:
        def one(item: tuple[BlobWriter, str]) -> int | Exception:
            try:
                return item[0].commit(item[1])
            except Exception as exc:
                return exc

        if len(items) == 1:
            return [one(items[0])]
        return list(_COMMIT_POOL.map(one, items))

    def upload_size(self, upload_id: str) -> int | None:
        doc = self.read_state(upload_id)
        return int(doc["size"]) if doc is not None else None

    def delete_upload(self, upload_id: str) -> None:
        """Abort the session's multipart upload(s) and remove its objects."""
        if not _UPLOAD_ID_RE.match(upload_id):
            return
        base = self.upload_key(upload_id, "")
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for mpu in page.get("Uploads", []):
                with contextlib.suppress(ClientError):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
        keys = [{"Key": obj["Key"]} for obj in self._list(base)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})

    def list_uploads(self) -> Iterator[tuple[str, float]]:
        """Every session with objects or an open multipart upload, with its last activity."""
        base = self.key("_uploads/")
        latest: dict[str, float] = {}

        def note(key: str, when: dt.datetime) -> None:
            upload_id = key[len(base) :].split("/", 1)[0]
            latest[upload_id] = max(latest.get(upload_id, 0.0), when.timestamp())

        for obj in self._list(base):
            note(obj["Key"], obj["LastModified"])
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base):
            for mpu in page.get("Uploads", []):
                note(mpu["Key"], mpu["Initiated"])
        yield from latest.items()

    def delete(self, digest: str) -> None:
        self.delete_key(self.blob_key(digest))

    def trash(self, digest: str) -> bool:
        """Copy out of sight, then delete (S3 has no rename); False when absent."""
        try:
            self.copy_key(self.blob_key(digest), self.trash_key(digest))
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
        self.delete_key(self.blob_key(digest))
        return True

    def untrash(self, digest: str) -> None:
        try:
            self.copy_key(self.trash_key(digest), self.blob_key(digest))
        except ClientError as exc:
            if not is_missing(exc):
                raise
            return
        self.delete_key(self.trash_key(digest))

    def purge(self, digest: str) -> None:
        self.delete_key(self.trash_key(digest))

    def shared(self) -> S3Shared:
        return S3Shared(self)

    def iterate(self) -> Iterator[str]:
        for algo in ALGORITHMS:
            base = self.key(f"blobs/{algo}/")
            for obj in self._list(base):
                yield f"{algo}:{obj['Key'][len(base) :]}"

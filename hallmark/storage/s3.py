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

Upload sessions (multipart upload, state, tail, verification before anything is published)
are :mod:`hallmark.storage.s3upload`; this module reads, lists, copies and deletes.

Garbage collection: ``trash`` copies to ``_trash`` and deletes (S3 has no rename); a push
of the same content meanwhile puts the blob back, and the collector's re-check after
trashing untrashes it (content-addressed: either copy is the same bytes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from hallmark.digest import ALGORITHMS, parse_digest
from hallmark.storage.base import BlobNotFound, BlobWriter, StorageUnavailable, UploadNotFound
from hallmark.storage.s3client import is_missing, make_client, unavailable
from hallmark.storage.s3upload import MIN_PART, PART, UPLOAD_ID_RE, S3Writer
from hallmark.storage.shared import S3Shared

if TYPE_CHECKING:
    from hallmark.config import StorageConfig

log = logging.getLogger(__name__)
_READ_CHUNK = 1 << 20
_COPY_OBJECT_MAX = 5 << 30
# Group commits (many small blobs at once) are one PUT each: sent side by side, not in turn.
_COMMIT_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-s3-commit")


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
        if not UPLOAD_ID_RE.match(upload_id):
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
        if not UPLOAD_ID_RE.match(upload_id):
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


__all__ = ["MIN_PART", "PART", "UPLOAD_ID_RE", "S3BlobStore", "S3Reader", "S3Writer"]

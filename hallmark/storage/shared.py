"""The blob store's reserved namespace: files every replica needs that are not registry blobs.

Advisory sets and content-check rule bundles are made by ``hallmark db update`` on one replica
and read by all (replicas share no disk, only the database and the blob store). They are kept
content-addressed beside the registry's blobs, not among them: keys ``_shared/<algo>/<hex>`` in a
bucket, ``<path>/shared/<algo>/<hex>`` on the filesystem driver. Garbage collection only ever
looks at registry blobs (rows of the ``blobs`` table), so a pushed-then-deleted image that happens
to hold the same bytes can never take an advisory file with it. A file becomes visible only
complete and after its digest checked out (atomic rename; one S3 PUT or completed multipart upload).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from hallmark.digest import parse_digest
from hallmark.storage.base import BlobNotFound, DigestMismatch, StorageUnavailable

if TYPE_CHECKING:
    from hallmark.storage.s3 import S3BlobStore

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class SharedFiles(Protocol):
    """Content-addressed files in the reserved namespace (sha256 only)."""

    def stat(self, digest: str) -> int | None: ...

    def put(self, digest: str, source: Path) -> None:
        """Store ``source`` under ``digest``; raises DigestMismatch (and stores nothing) when it differs."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """Raises BlobNotFound when absent."""
        ...

    def delete(self, digest: str) -> None: ...

    def iterate(self) -> Iterator[str]: ...


class FilesystemShared:
    def __init__(self, root: Path) -> None:
        self.root = root / "shared"

    def path(self, digest: str) -> Path:
        algo, hexpart = parse_digest(digest)
        return self.root / algo / hexpart

    def stat(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, digest: str, source: Path) -> None:
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        h = hashlib.sha256()
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise DigestMismatch(digest, actual)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def iterate(self) -> Iterator[str]:
        base = self.root / "sha256"
        if base.is_dir():
            for entry in os.scandir(base):
                if not entry.name.startswith("."):
                    yield f"sha256:{entry.name}"


class S3Shared:
    def __init__(self, store: S3BlobStore) -> None:
        self.store = store
        self.base = store.key("_shared/")

    def key(self, digest: str) -> str:
        algo, hexpart = parse_digest(digest)
        return f"{self.base}{algo}/{hexpart}"

    def stat(self, digest: str) -> int | None:
        from botocore.exceptions import ClientError

        from hallmark.storage.s3client import is_missing

        try:
            head = self.store.client.head_object(Bucket=self.store.bucket, Key=self.key(digest))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    def put(self, digest: str, source: Path) -> None:
        import boto3.exceptions

        actual = file_digest(source)  # checked before anything is sent: nothing wrong becomes visible
        if actual != digest:
            raise DigestMismatch(digest, actual)
        try:  # one PUT, or a multipart upload completed only when every part arrived
            self.store.client.upload_file(str(source), self.store.bucket, self.key(digest))
        except boto3.exceptions.S3UploadFailedError as exc:
            raise StorageUnavailable(f"S3 bucket {self.store.bucket!r}: upload failed: {exc}") from exc

    def open(self, digest: str) -> BinaryIO:
        from hallmark.storage.s3 import S3Reader

        size = self.stat(digest)
        if size is None:
            raise BlobNotFound(digest)
        return cast(BinaryIO, io.BufferedReader(S3Reader(self.store, self.key(digest), size), _CHUNK))

    def delete(self, digest: str) -> None:
        self.store.client.delete_object(Bucket=self.store.bucket, Key=self.key(digest))

    def iterate(self) -> Iterator[str]:
        pages = self.store.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.store.bucket, Prefix=self.base + "sha256/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield "sha256:" + obj["Key"].rsplit("/", 1)[1]

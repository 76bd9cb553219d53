"""Blob uploads of :class:`~hallmark.registry.service.RegistryService`: sessions, chunks, commits.

Apart from the manifest side of the service because they carry their own state (open sessions in
this process, the per-principal admission count) and their own I/O path: bodies hashed and
written in the thread pool while the loop reads the next chunk, small blobs committed in groups
(:mod:`.commits`). ``RegistryService`` inherits :class:`UploadSessions`, so its upload methods
keep their names.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hallmark.config import RegistryConfig
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.registry.commits import CommitBatcher
from hallmark.registry.errors import RegistryError
from hallmark.registry.names import check_digest, check_name
from hallmark.registry.sessions import UploadIds
from hallmark.storage.base import BlobStore, BlobWriter, DigestMismatch, UploadNotFound

T = TypeVar("T")
_BUFFER = 4 << 20
_GROUP_COMMIT_MAX = 1 << 20  # blobs up to this size are committed in groups (see commits.py)


@dataclass
class BlobInfo:
    digest: str
    size: int
    path: Path | None


class _Upload:
    """An open upload in this process; the lock orders PATCH/PUT on the same session.

    ``created`` is when the session was opened; ``recorded`` whether it has a row yet
    (sessions get one only once data is written, see :mod:`hallmark.registry.sessions`).
    """

    def __init__(self, created: dt.datetime, recorded: bool) -> None:
        self.lock = asyncio.Lock()
        self.writer: BlobWriter | None = None
        self.created = created
        self.recorded = recorded
        self.principal: str | None = None  # who writes its first data: the row records it


def upload_location(repo: str, upload_id: str) -> str:
    return f"/v2/{repo}/blobs/uploads/{upload_id}"


class UploadSessions(abc.ABC):
    """The upload half of ``RegistryService``, which provides the stores, the pool and the batcher."""

    blobs: BlobStore
    meta: MetadataStore
    config: RegistryConfig
    executor: ThreadPoolExecutor
    upload_ids: UploadIds
    batcher: CommitBatcher

    def __init__(self) -> None:
        self._uploads: dict[str, _Upload] = {}
        # Uploads in progress in this process that have no session row yet, per principal.
        self._unrecorded: collections.Counter[str] = collections.Counter()

    @abc.abstractmethod
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` in the thread pool."""

    @abc.abstractmethod
    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a metadata read (inline on local SQLite)."""

    async def start_upload(self, repo: str) -> str:
        """A new session id; nothing is stored until data arrives (see :mod:`.sessions`)."""
        check_name(repo)
        return self.upload_ids.new(repo)

    @contextlib.asynccontextmanager
    async def _admitted(self, principal: str | None, new: bool) -> AsyncIterator[None]:
        """Refuse a new upload (a session's first data, or a one-request push) when ``principal``
        already has ``max_open_uploads_per_principal`` open: sessions holding data (rows, shared
        by every process) plus new uploads in progress here, which have no row yet.

        POST stores nothing (see :mod:`.sessions`), so the limit bites where a session starts
        costing a descriptor and disk. Other processes' uploads without a row yet are not
        seen: with N workers a principal may briefly have up to N-1 more in flight.
        """
        limit = self.config.max_open_uploads_per_principal
        if not new or principal is None or limit <= 0:
            yield
            return
        self._unrecorded[principal] += 1  # before the read: concurrent requests here see each other
        try:
            since = utcnow() - dt.timedelta(seconds=self.config.upload_expiry_seconds)
            count = await self.read(self.meta.open_uploads, principal, since) + self._unrecorded[principal]
            if count > limit:
                raise RegistryError(
                    "TOOMANYREQUESTS",
                    message=f"{principal} has {limit} open uploads, the limit: finish or cancel some first",
                    detail={"open": count - 1, "limit": limit},
                )
            yield
        finally:
            self._unrecorded[principal] -= 1
            if self._unrecorded[principal] <= 0:
                del self._unrecorded[principal]

    async def _session(self, repo: str, upload_id: str) -> _Upload:
        check_name(repo)
        up = self._uploads.get(upload_id)
        rec = await self.read(self.meta.get_upload, upload_id)
        if rec is not None:
            if rec.closed or rec.repo_name != repo:
                raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
            if up is None:
                up = self._uploads[upload_id] = _Upload(rec.created_at, True)
            up.recorded = True
            return up
        created = self.upload_ids.created(upload_id, repo)
        now = utcnow().timestamp()
        if created is None or now - created > self.config.upload_expiry_seconds or created > now + 300:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
        return up or _Upload(dt.datetime.fromtimestamp(created, dt.UTC), False)

    async def _writer(self, upload_id: str, up: _Upload) -> BlobWriter:
        on_disk = self.blobs.upload_size(upload_id)
        if on_disk is None:
            if up.recorded:
                raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
            # First data of a session: its file starts now (opening a new file does not block).
            try:
                up.writer = self.blobs.writer(upload_id, False)
            except FileExistsError:  # another process started it meanwhile
                up.writer = await self.run(self.blobs.writer, upload_id, True)
            self._uploads[upload_id] = up
            return up.writer
        if up.writer is not None and up.writer.size == on_disk:
            return up.writer
        if up.writer is not None:
            # Another replica appended to this session: rebuild from disk.
            await self.run(up.writer.close)
        try:
            up.writer = await self.run(self.blobs.writer, upload_id, True)
        except UploadNotFound as exc:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id}) from exc
        self._uploads[upload_id] = up
        return up.writer

    async def upload_status(self, repo: str, upload_id: str) -> int:
        up = await self._session(repo, upload_id)
        size = await self.run(self.blobs.upload_size, upload_id)
        if size is None:
            if up.recorded:
                raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
            return 0
        return size

    async def _pump(self, writer: BlobWriter, body: AsyncIterable[bytes], limit: int | None) -> tuple[int, bytes]:
        """Copy the request body into the writer; the pool hashes+writes while the loop reads.

        Chunks are handed over as a list (no concatenation copies). Returns the byte count
        and the unwritten tail, which the caller writes in the same pool call as its commit
        so a small blob costs one thread hop.
        """
        pending: asyncio.Future[None] | None = None
        parts: list[bytes] = []
        buffered = 0
        written = 0
        loop = asyncio.get_running_loop()
        try:
            async for chunk in body:
                parts.append(chunk)
                buffered += len(chunk)
                written += len(chunk)
                if limit is not None and written > limit:
                    raise RegistryError("SIZE_INVALID", detail="body is longer than Content-Length/Content-Range")
                if buffered >= _BUFFER:
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(self.executor, writer.write_parts, parts)
                    parts, buffered = [], 0
            if pending is not None:
                await pending
                pending = None
        except BaseException:
            if pending is not None:
                await asyncio.wait([pending])
            if parts:
                await self.run(writer.write_parts, parts)
            raise
        return written, b"".join(parts)

    def _patch_done(self, writer: BlobWriter, tail: bytes, upload_id: str, repo: str, up: _Upload) -> None:
        if tail:
            writer.write(tail)
        writer.flush()
        self.meta.keep_upload(upload_id, repo, up.created, up.principal)
        up.recorded = True

    async def _keep_partial(self, writer: BlobWriter, upload_id: str, repo: str, up: _Upload) -> None:
        """After a failed body: keep what arrived, and record the session if it now holds data, so
        it counts as open (and can be resumed) instead of leaving an unowned file behind."""
        if writer.size > 0:
            await self.run(self._patch_done, writer, b"", upload_id, repo, up)
        else:
            await self.run(writer.flush)

    def _complete(self, writer: BlobWriter, tail: bytes, digest: str, repo: str, upload_id: str | None) -> int:
        if tail:
            writer.write(tail)
        size = writer.commit(digest)
        self.meta.link_blob(repo, digest, size, upload_id)
        return size

    async def _commit(self, writer: BlobWriter, tail: bytes, digest: str, repo: str, upload_id: str | None) -> int:
        if writer.size + len(tail) <= _GROUP_COMMIT_MAX:
            return await self.batcher.commit(writer, tail, digest, repo, upload_id)
        return await self.run(self._complete, writer, tail, digest, repo, upload_id)

    async def patch_upload(
        self,
        repo: str,
        upload_id: str,
        body: AsyncIterable[bytes],
        content_range: tuple[int, int] | None,
        content_length: int | None,
        principal: str | None = None,
    ) -> int:
        up = await self._session(repo, upload_id)
        async with up.lock, self._admitted(principal, not up.recorded):
            if not up.recorded:
                up.principal = principal
            writer = await self._writer(upload_id, up)
            start = writer.size
            expected = content_length
            if content_range is not None:
                first, last = content_range
                if first != start or last < first:
                    raise RegistryError(
                        "BLOB_UPLOAD_INVALID",
                        message=f"chunk range {first}-{last} does not continue the upload at offset {start}",
                        status=416,
                        headers={"Range": f"0-{max(start - 1, 0)}", "Location": upload_location(repo, upload_id)},
                    )
                expected = last - first + 1
                if content_length is not None and content_length != expected:
                    raise RegistryError("SIZE_INVALID", detail="Content-Length does not match Content-Range")
            try:
                got, tail = await self._pump(writer, body, expected)
            except BaseException:
                await self._keep_partial(writer, upload_id, repo, up)
                raise
            await self.run(self._patch_done, writer, tail, upload_id, repo, up)
            if expected is not None and got != expected:
                raise RegistryError("SIZE_INVALID", detail=f"expected {expected} bytes, received {got}")
            return writer.size

    async def finish_upload(
        self,
        repo: str,
        upload_id: str,
        digest: str | None,
        body: AsyncIterable[bytes] | None,
        content_range: tuple[int, int] | None,
        content_length: int | None,
        principal: str | None = None,
    ) -> BlobInfo:
        if digest is None:
            raise RegistryError("DIGEST_INVALID", message="digest query parameter is required")
        check_digest(digest)
        up = await self._session(repo, upload_id)
        async with up.lock, self._admitted(principal, not up.recorded):
            if not up.recorded:
                up.principal = principal
            writer = await self._writer(upload_id, up)
            tail = b""
            if body is not None and (content_length or content_range):
                expected = content_length
                if content_range is not None:
                    if content_range[0] != writer.size:
                        raise RegistryError(
                            "BLOB_UPLOAD_INVALID",
                            message="chunk does not continue the upload",
                            status=416,
                            headers={"Range": f"0-{max(writer.size - 1, 0)}"},
                        )
                    expected = content_range[1] - content_range[0] + 1
                try:
                    got, tail = await self._pump(writer, body, expected)
                except BaseException:
                    await self._keep_partial(writer, upload_id, repo, up)
                    raise
                if expected is not None and got != expected:
                    await self.run(self._patch_done, writer, tail, upload_id, repo, up)
                    raise RegistryError("SIZE_INVALID", detail=f"expected {expected} bytes, received {got}")
            try:
                size = await self._commit(writer, tail, digest, repo, upload_id)
            except DigestMismatch as exc:
                await self._drop_upload(repo, upload_id, writer)
                raise RegistryError("DIGEST_INVALID", detail={"expected": exc.expected, "actual": exc.actual}) from exc
            self._uploads.pop(upload_id, None)
            return BlobInfo(digest, size, self.blobs.local_path(digest))

    async def monolithic_upload(
        self,
        repo: str,
        digest: str,
        body: AsyncIterable[bytes],
        content_length: int | None,
        principal: str | None = None,
    ) -> BlobInfo:
        check_name(repo)
        check_digest(digest)
        async with self._admitted(principal, True):
            return await self._monolithic(repo, digest, body, content_length)

    async def _monolithic(
        self, repo: str, digest: str, body: AsyncIterable[bytes], content_length: int | None
    ) -> BlobInfo:
        upload_id = uuid.uuid4().hex
        writer = self.blobs.writer(upload_id, False)  # a new empty file: does not block
        try:
            got, tail = await self._pump(writer, body, content_length)
            if content_length is not None and got != content_length:
                raise RegistryError("SIZE_INVALID", detail=f"expected {content_length} bytes, received {got}")
            size = await self._commit(writer, tail, digest, repo, None)
        except DigestMismatch as exc:
            await self.run(writer.cancel)
            raise RegistryError("DIGEST_INVALID", detail={"expected": exc.expected, "actual": exc.actual}) from exc
        except BaseException:
            await self.run(writer.cancel)
            raise
        return BlobInfo(digest, size, self.blobs.local_path(digest))

    async def _drop_upload(self, repo: str, upload_id: str, writer: BlobWriter | None) -> None:
        self._uploads.pop(upload_id, None)
        if writer is not None:
            await self.run(writer.cancel)
        await self.run(self.blobs.delete_upload, upload_id)
        await self.run(self.meta.close_upload, upload_id, repo)

    async def cancel_upload(self, repo: str, upload_id: str) -> None:
        up = await self._session(repo, upload_id)
        async with up.lock:
            await self._drop_upload(repo, upload_id, up.writer)

    def cleanup_uploads(self, now: dt.datetime | None = None) -> int:
        """Remove expired sessions and orphaned partial files; returns how many were removed."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=self.config.upload_expiry_seconds)
        removed = 0
        for upload_id in self.meta.expired_uploads(cutoff):
            up = self._uploads.pop(upload_id, None)
            if up is not None and up.writer is not None:
                up.writer.close()
            self.blobs.delete_upload(upload_id)
            self.meta.delete_upload(upload_id)
            removed += 1
        known = self.meta.upload_ids()
        for upload_id, mtime in list(self.blobs.list_uploads()):
            # Partial files with no session (killed monolithic pushes) once they are old enough.
            if upload_id not in known and mtime < cutoff.timestamp():
                self.blobs.delete_upload(upload_id)
                removed += 1
        return removed

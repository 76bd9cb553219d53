"""Registry operations over a :class:`BlobStore` and a :class:`MetadataStore`.

The HTTP handlers call only this service; it never sees a request object.
Blocking storage and SQL calls run in a thread pool so the event loop keeps
serving; upload bodies are hashed and written in that pool while the loop reads
the next chunk, so hashing overlaps network I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from hallmark.config import RegistryConfig
from hallmark.digest import InvalidDigest, digest_bytes, parse_digest
from hallmark.metadata.store import (
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    Referrer,
    TagImmutable,
    utcnow,
)
from hallmark.registry.commits import CommitBatcher
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import (
    INDEX_TYPES,
    OCI_INDEX,
    accepts,
    default_platform_child,
    parse_manifest,
)
from hallmark.registry.names import referrers_tag_subject, valid_name, valid_tag
from hallmark.registry.sessions import UploadIds
from hallmark.storage.base import BlobStore, BlobWriter, DigestMismatch, UploadNotFound

if TYPE_CHECKING:
    from hallmark.mirror.proxy import PullThrough

log = logging.getLogger(__name__)
T = TypeVar("T")
_BUFFER = 4 << 20
_GROUP_COMMIT_MAX = 1 << 20  # blobs up to this size are committed in groups (see commits.py)


@dataclass
class BlobInfo:
    digest: str
    size: int
    path: Path | None


@dataclass
class PushedManifest:
    digest: str
    subject: str | None
    media_type: str
    location: str | None = None  # where to pull it, when not by its digest


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


def check_name(name: str) -> None:
    if not valid_name(name):
        raise RegistryError("NAME_INVALID", detail={"name": name})


def check_digest(value: str, code: str = "DIGEST_INVALID") -> str:
    try:
        parse_digest(value)
    except InvalidDigest as exc:
        raise RegistryError(code, message=str(exc)) from exc
    return value


# Listeners receive (event, repo, digest, tag) after a manifest push or delete.
Listener = Callable[[str, str, str, str | None], None]


class PullVerdict(Protocol):
    """What a pull policy says about serving one manifest (``hallmark.lifecycle.pull_policy.PullDecision``)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def warning(self) -> str | None: ...

    @property
    def message(self) -> str | None: ...


# Called (blocking, cheap: a metadata read) with (repo, digest) on every manifest GET/HEAD, once the
# reference is resolved. The registry knows nothing of the catalog: the application sets it.
PullPolicy = Callable[[str, str], PullVerdict]


class RegistryService:
    def __init__(
        self,
        blobs: BlobStore,
        meta: MetadataStore,
        config: RegistryConfig,
        executor: ThreadPoolExecutor | None = None,
        upload_ids: UploadIds | None = None,
    ) -> None:
        self.blobs = blobs
        self.upload_ids = upload_ids or UploadIds()
        self.batcher = CommitBatcher(blobs, meta)
        self.meta = meta
        self.config = config
        self.executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-io")
        self._uploads: dict[str, _Upload] = {}
        # Uploads in progress in this process that have no session row yet, per principal.
        self._unrecorded: collections.Counter[str] = collections.Counter()
        self.listeners: list[Listener] = []
        self.pull_policy: PullPolicy | None = None
        # Pull-through caches ([[mirror.proxy]]); the application sets it when some are configured.
        self.proxy: PullThrough | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A metadata read: inline for local SQLite (no thread hop on hot paths), pooled otherwise."""
        if self.meta.inline_reads:
            return fn(*args)
        return await self.run(fn, *args)

    def notify(self, event: str, repo: str, digest: str, tag: str | None = None) -> None:
        """Tell the listeners (the pipeline) about a change made outside a request, e.g. by the
        garbage collection (``delete``); call it on the event loop, as pushes do."""
        self._notify(event, repo, digest, tag)

    def _notify(self, event: str, repo: str, digest: str, tag: str | None) -> None:
        for listener in self.listeners:
            try:
                listener(event, repo, digest, tag)
            except Exception:  # a listener must never break a push
                log.exception("listener failed for %s %s@%s", event, repo, digest)

    # -- blobs -----------------------------------------------------------------------
    async def stat_blob(self, repo: str, digest: str) -> BlobInfo:
        check_name(repo)
        check_digest(digest)
        size = await self.read(self.meta.blob_size, repo, digest)
        if size is None:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        return BlobInfo(digest, size, self.blobs.local_path(digest))

    async def delete_blob(self, repo: str, digest: str) -> None:
        check_name(repo)
        check_digest(digest)
        if not self.config.delete_enabled:
            raise RegistryError("UNSUPPORTED", message="deletion is disabled on this registry")
        if not await self.run(self.meta.unlink_blob, repo, digest):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})

    async def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Link a blob from ``source`` into ``repo``; False when it cannot be mounted."""
        check_name(repo)
        if not valid_name(source):
            return False
        size = await self.read(self.meta.blob_size, source, digest)
        if size is None or self.blobs.stat(digest) is None:
            return False
        await self.run(self.meta.link_blob, repo, digest, size)
        return True

    # -- uploads -----------------------------------------------------------------------
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

    # -- manifests ---------------------------------------------------------------------
    async def put_manifest(
        self, repo: str, reference: str, content: bytes, content_type: str | None, actor: str = "registry"
    ) -> PushedManifest:
        """Store a pushed manifest; ``actor`` (who pushed) goes into the tag's history."""
        check_name(repo)
        if len(content) > self.config.max_manifest_bytes:
            raise RegistryError(
                "SIZE_INVALID", message=f"manifest exceeds {self.config.max_manifest_bytes} bytes", status=413
            )
        parsed = parse_manifest(content, content_type)
        tag: str | None = None
        if ":" in reference:
            algo, _ = parse_digest(check_digest(reference))
            digest = digest_bytes(content, algo)
            if digest != reference:
                raise RegistryError("DIGEST_INVALID", detail={"expected": reference, "actual": digest})
        else:
            if not valid_tag(reference):
                raise RegistryError("MANIFEST_INVALID", message=f"invalid tag {reference!r}")
            subject = referrers_tag_subject(reference)
            if subject is not None:
                return await self._check_referrers_index(
                    repo, reference, subject, content, parsed.media_type, parsed.manifest_refs
                )
            tag = reference
            digest = digest_bytes(content)
        record = ManifestRecord(digest, parsed.media_type, content, parsed.artifact_type, parsed.subject)
        annotations = orjson.dumps(parsed.annotations).decode() if parsed.annotations else None
        try:
            await self.run(
                self.meta.put_manifest, repo, record, parsed.blob_refs, parsed.manifest_refs, tag, annotations, actor
            )
        except MissingReferences as exc:
            raise RegistryError("MANIFEST_BLOB_UNKNOWN", detail={"missing": exc.missing}) from exc
        except TagImmutable as exc:
            raise RegistryError("DENIED", message=str(exc)) from exc
        self._notify("push", repo, digest, tag)
        return PushedManifest(digest, parsed.subject, parsed.media_type)

    async def get_manifest(self, repo: str, reference: str, accept: Sequence[str] = ()) -> ManifestRecord:
        check_name(repo)
        by_digest = ":" in reference
        if by_digest:
            check_digest(reference)
        elif not valid_tag(reference):
            # Nothing can be stored under a name that is not a tag: unknown, as the CNCF registry
            # and the conformance suite have it (pushing to such a name is the error).
            raise RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})
        else:
            subject = referrers_tag_subject(reference)
            if subject is not None:
                return await self.referrers_index(repo, subject)
        rec = await self.read(self.meta.get_manifest, repo, reference, by_digest)
        if rec is None:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})
        if accept and not by_digest and rec.media_type in INDEX_TYPES and not accepts(accept, rec.media_type):
            # A client that cannot read an index gets the linux/amd64 image, as distribution does.
            child = default_platform_child(rec.content, accept)
            if child is not None:
                sub = await self.read(self.meta.get_manifest, repo, child, True)
                if sub is not None:
                    return sub
            raise RegistryError("MANIFEST_UNKNOWN", message="no manifest matching the Accept header")
        return rec

    async def check_pull(self, repo: str, digest: str) -> str | None:
        """Apply the pull policy to a resolved manifest: raises ``DENIED`` when it refuses, else
        returns the warning to send with the manifest (None: none)."""
        if self.pull_policy is None:
            return None
        verdict = await self.read(self.pull_policy, repo, digest)
        if not verdict.allowed:
            raise RegistryError("DENIED", message=verdict.message, detail={"repository": repo, "digest": digest})
        return verdict.warning

    async def delete_manifest(self, repo: str, reference: str, actor: str = "registry") -> None:
        check_name(repo)
        if not self.config.delete_enabled:
            raise RegistryError("UNSUPPORTED", message="deletion is disabled on this registry")
        if ":" in reference:
            check_digest(reference)
            ok = await self.run(self.meta.delete_manifest, repo, reference, actor)
            event = "delete"
        else:
            if not valid_tag(reference):
                raise RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})
            if await self.read(self.meta.tag_is_immutable, repo):
                raise RegistryError("DENIED", message=f"tag {reference!r} in {repo} is immutable")
            ok = await self.run(self.meta.delete_tag, repo, reference, actor)
            event = "untag"
            subject = referrers_tag_subject(reference)
            if not ok and subject is not None and await self.all_referrers(repo, subject):
                raise RegistryError(
                    "UNSUPPORTED",
                    message=f"{reference} is computed from the referrers of {subject}: delete those instead",
                )
        if not ok:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})
        self._notify(event, repo, reference, None)

    # -- listings --------------------------------------------------------------------------
    def page_size(self, n: str | None) -> int:
        if n is None:
            return self.config.default_page_size
        if not n.isdigit():
            raise RegistryError("UNSUPPORTED", message="n must be a non-negative integer", status=400)
        return min(int(n), self.config.max_page_size)

    async def list_tags(self, repo: str, n: str | None, last: str | None) -> tuple[list[str], bool]:
        check_name(repo)
        page = self.page_size(n)
        names = await self.read(self.meta.list_tags, repo, page + 1, last)
        if names is None:
            raise RegistryError("NAME_UNKNOWN", detail={"name": repo})
        return names[:page], len(names) > page

    async def catalog(self, n: str | None, last: str | None) -> tuple[list[str], bool]:
        page = self.page_size(n)
        names = await self.read(self.meta.list_repositories, page + 1, last)
        return names[:page], len(names) > page

    async def referrers(
        self, repo: str, digest: str, artifact_type: str | None, last: str | None
    ) -> tuple[list[Referrer], bool]:
        check_name(repo)
        check_digest(digest)
        page = self.config.referrers_page_size
        refs = await self.read(self.meta.referrers, repo, digest, artifact_type, page + 1, last)
        return refs[:page], len(refs) > page

    async def all_referrers(self, repo: str, subject: str) -> list[Referrer]:
        """Every referrer of ``subject``, in the referrers API's order, read page by page."""
        page = self.config.referrers_page_size
        refs: list[Referrer] = []
        while True:
            got = await self.read(self.meta.referrers, repo, subject, None, page, refs[-1].digest if refs else None)
            refs += got
            if len(got) < page:
                return refs

    async def referrers_index(self, repo: str, subject: str) -> ManifestRecord:
        """The referrers tag schema's ``sha256-<hex>`` index, computed from the referrers API.

        Clients without referrers-API support (notation 1.0 by default, older cosign and oras)
        read referrers from this tag. Computing it on each read keeps it equal to the API's answer
        (the source of truth), including for artifacts Hallmark attaches itself.
        """
        refs = await self.all_referrers(repo, subject)
        if not refs:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"reference": subject.replace(":", "-")})
        content = orjson.dumps(referrers_document(refs))
        return ManifestRecord(digest_bytes(content), OCI_INDEX, content)

    async def _check_referrers_index(
        self, repo: str, tag: str, subject: str, content: bytes, media_type: str, children: list[str]
    ) -> PushedManifest:
        """Accept a fallback client's index for a computed referrers tag as a no-op, if it says nothing new.

        The spec's fallback has clients push an updated index after a referrer; the one they
        read already lists it, so they rarely do. An index that only lists referrers is
        already served (the computed one wins); one that lists a manifest without this
        subject is refused, so nothing a client meant to record is silently dropped.
        """
        if media_type != OCI_INDEX:
            raise RegistryError(
                "MANIFEST_INVALID",
                message=f"tag {tag} holds the referrers of {subject}: only an OCI image index can be pushed to it",
            )
        known = {r.digest for r in await self.all_referrers(repo, subject)}
        strangers = sorted(set(children) - known)
        if strangers:
            raise RegistryError(
                "MANIFEST_INVALID",
                message=f"tag {tag} is computed from the referrers of {subject}; "
                "push these manifests with that subject instead",
                detail={"not_referrers": strangers},
            )
        return PushedManifest(digest_bytes(content), None, media_type, location=f"/v2/{repo}/manifests/{tag}")


def upload_location(repo: str, upload_id: str) -> str:
    return f"/v2/{repo}/blobs/uploads/{upload_id}"


def referrer_descriptor(r: Referrer) -> dict[str, Any]:
    """A referrer as the descriptor the referrers API (and the referrers tag) lists."""
    d: dict[str, Any] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
    if r.artifact_type:
        d["artifactType"] = r.artifact_type
    if r.annotations:
        d["annotations"] = orjson.loads(r.annotations)
    return d


def referrers_document(refs: Sequence[Referrer]) -> dict[str, Any]:
    """The image index that lists ``refs``: the body of both the referrers API and the referrers tag."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [referrer_descriptor(r) for r in refs]}


@dataclass
class ArtifactLayer:
    media_type: str
    data: bytes
    annotations: dict[str, str] | None = None


EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"


def attach_artifact(
    svc: RegistryService,
    repo: str,
    subject: ManifestRecord,
    artifact_type: str,
    layers: Sequence[ArtifactLayer],
    annotations: dict[str, str] | None = None,
    extra_blobs: Sequence[bytes] = (),
) -> str:
    """Store an OCI 1.1 artifact whose ``subject`` is ``subject`` (blocking; run it in a worker).

    Reports, SBOMs and signatures that Hallmark makes go through the same
    validation and storage as a client push, so ``referrers`` lists them.
    """
    for data in (EMPTY_CONFIG, *(layer.data for layer in layers), *extra_blobs):
        digest, size = svc.blobs.put(data)
        svc.meta.link_blob(repo, digest, size)
    descs = []
    for layer in layers:
        d: dict[str, Any] = {"mediaType": layer.media_type, "digest": digest_bytes(layer.data), "size": len(layer.data)}
        if layer.annotations:
            d["annotations"] = layer.annotations
        descs.append(d)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": digest_bytes(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": descs,
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.content)},
    }
    if annotations:
        doc["annotations"] = annotations
    return push_manifest_sync(svc, repo, orjson.dumps(doc), doc["mediaType"])


def push_manifest_sync(svc: RegistryService, repo: str, content: bytes, media_type: str) -> str:
    parsed = parse_manifest(content, media_type)
    digest = digest_bytes(content)
    record = ManifestRecord(digest, parsed.media_type, content, parsed.artifact_type, parsed.subject)
    annotations = orjson.dumps(parsed.annotations).decode() if parsed.annotations else None
    svc.meta.put_manifest(repo, record, parsed.blob_refs, parsed.manifest_refs, None, annotations)
    return digest

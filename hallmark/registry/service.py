"""Registry operations over a :class:`BlobStore` and a :class:`MetadataStore`.

The HTTP handlers call only this service; it never sees a request object.
Blocking storage and SQL calls run in a thread pool so the event loop keeps
serving. Blob uploads (sessions, chunks, commits) are in :mod:`.uploads`, which
this service inherits; manifests, tags and referrers are here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from hallmark.config import RegistryConfig
from hallmark.digest import digest_bytes, parse_digest
from hallmark.metadata.history import Referrer
from hallmark.metadata.store import ManifestRecord, MetadataStore, MissingReferences, TagImmutable
from hallmark.registry.commits import CommitBatcher
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import (
    INDEX_TYPES,
    OCI_INDEX,
    accepts,
    default_platform_child,
    parse_manifest,
)
from hallmark.registry.names import check_digest, check_name, referrers_tag_subject, valid_name, valid_tag
from hallmark.registry.sessions import UploadIds
from hallmark.registry.uploads import BlobInfo, UploadSessions
from hallmark.storage.base import BlobStore

if TYPE_CHECKING:
    from hallmark.mirror.proxy import PullThrough

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class PushedManifest:
    digest: str
    subject: str | None
    media_type: str
    location: str | None = None  # where to pull it, when not by its digest


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


class RegistryService(UploadSessions):
    def __init__(
        self,
        blobs: BlobStore,
        meta: MetadataStore,
        config: RegistryConfig,
        executor: ThreadPoolExecutor | None = None,
        upload_ids: UploadIds | None = None,
    ) -> None:
        super().__init__()
        self.blobs = blobs
        self.upload_ids = upload_ids or UploadIds()
        self.batcher = CommitBatcher(blobs, meta)
        self.meta = meta
        self.config = config
        self.executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="hallmark-io")
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

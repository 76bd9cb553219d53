"""One run of a repository mirror: copy what changed from the source repository into Hallmark.

Per tag: the upstream manifest digest is read first (one HEAD); a tag whose digest is already
stored under that tag is skipped at that cost. Otherwise the manifest is fetched *by that digest*
(so a tag moved upstream during the run cannot mix two versions), blobs already in the blob store
are linked, never fetched, and others are streamed to storage and committed only when size and
digest match. The tag moves last, after every referenced blob and child manifest is in place, so
a failure leaves nothing half-stored. Every stored manifest goes to the pipeline exactly as a push
does (``Pipeline.on_push``), so mirrored images are indexed, matched and graded.

Progress is one row per tag (``mirror_run_tags``): a run claimed again after a crash, or retried
after failures, only does the tags not yet done.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from sqlalchemy import select, update

from hallmark.digest import digest_bytes, is_digest
from hallmark.metadata.store import ManifestRecord, MetadataStore, MissingReferences, TagImmutable, utcnow
from hallmark.mirror.definitions import Mirror
from hallmark.mirror.tables import mirror_run_tags, mirror_runs
from hallmark.oci import mediatypes as mt
from hallmark.oci.registry import RegistryClient
from hallmark.oci.source import OciError, Platform
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import parse_manifest
from hallmark.registry.names import valid_tag
from hallmark.storage.base import BlobStore, DigestMismatch

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a run with failed tags is tried again (only those tags) up to this many times
RETRY_BASE_SECONDS = 30.0
MAX_TAG_PAGES = 200
ACCEPT = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_LIST, mt.DOCKER_MANIFEST])
DONE = ("copied", "skipped")
MIN_BYTES_PER_SECOND = 64 << 10  # a blob body may take timeout_seconds plus its size at this rate


class MirrorError(Exception):
    """A tag (or the whole run) could not be copied; the message is recorded and shown."""


class TagGone(MirrorError):
    """The tag was removed upstream after the tag list was read: nothing to copy, nothing failed."""


@dataclass
class Target:
    """Where a run writes, and what it tells: the destination's stores and the push hooks."""

    meta: MetadataStore
    blobs: BlobStore
    max_manifest_bytes: int
    on_push: Callable[[str, str], None]  # the pipeline, as after a manifest PUT
    audit: Callable[[str, str, str, str, dict[str, Any]], None] | None = None  # actor, action, repo, digest, detail
    # (robot, repo, "push" | "pull") -> refusal or None; pull mirrors push into, push mirrors pull from ``repo``
    robot_may: Callable[[str, str, str], str | None] | None = None
    heartbeat: Callable[[], None] = lambda: None  # keeps the job's lease while tags are copied
    # May a blob stored for other repositories be linked instead of fetched? (None: always.) A hostile
    # source could name the digest of a private layer; linking it would publish it in the destination.
    may_link: Callable[[str], bool] | None = None


@dataclass
class TagCounts:
    bytes: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    referrers: int = 0
    stored: list[str] = field(default_factory=list)


def retry_delay(attempt: int) -> float:
    return min(RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), 900.0)


class Source:
    """The source repository over the distribution API (Basic or Bearer through ``RegistryClient``)."""

    def __init__(self, m: Mirror, credentials: tuple[str, str] | None, max_manifest_bytes: int) -> None:
        self.client = RegistryClient(
            m.source_registry,
            m.source_repository,
            insecure=m.insecure,
            credentials=credentials,
            timeout=m.timeout_seconds,
        )
        self.base = self.client.base
        self.max_manifest_bytes = max_manifest_bytes
        self.timeout = m.timeout_seconds
        self.referrers_api: bool | None = None  # unknown until the first answer
        self.requests = 0

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """``RegistryClient.request``, counted (a run reports how many requests it made)."""
        self.requests += 1
        return self.client.request(method, url, **kwargs)

    def close(self) -> None:
        self.client.close()

    def tags(self) -> list[str]:
        out: list[str] = []
        url: str | None = f"{self.base}/tags/list"
        params: dict[str, str] | None = {"n": "1000"}
        for _ in range(MAX_TAG_PAGES):
            if url is None:
                return out
            resp = self.request("GET", url, params=params)
            try:
                doc = resp.json()
            except ValueError as exc:
                raise MirrorError("tag list is not JSON") from exc
            tags = doc.get("tags") if isinstance(doc, dict) else None
            out += [t for t in tags or [] if isinstance(t, str) and valid_tag(t)]
            nxt = resp.links.get("next", {}).get("url")
            url, params = (self.client.url(nxt), None) if nxt else (None, None)
        raise MirrorError(f"tag list longer than {MAX_TAG_PAGES} pages")

    def digest_of(self, tag: str) -> str:
        """The digest a tag points at now (HEAD; GET when the registry sends no digest header)."""
        resp = self.request("HEAD", f"{self.base}/manifests/{tag}", accept=ACCEPT, expect=(200, 404))
        resp.close()
        if resp.status_code == 404:
            raise TagGone(f"tag {tag} is no longer in the source")
        digest = resp.headers.get("docker-content-digest", "")
        if is_digest(digest):
            return digest
        return self.manifest(tag)[2]

    def manifest(self, reference: str, accept: str = ACCEPT) -> tuple[bytes, str, str]:
        """(body, media type, digest), size-limited and checked against ``reference`` when it is a digest."""
        resp = self.request("GET", f"{self.base}/manifests/{reference}", accept=accept, stream=True)
        try:
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_manifest_bytes:
                raise MirrorError(f"manifest {reference} larger than {self.max_manifest_bytes} bytes")
            chunks, size = [], 0
            deadline = time.monotonic() + 2 * self.timeout
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise MirrorError(f"manifest {reference}: slower than {2 * self.timeout:g} seconds")
                if size > self.max_manifest_bytes:
                    raise MirrorError(f"manifest {reference} larger than {self.max_manifest_bytes} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise MirrorError(f"manifest {reference}: {type(exc).__name__}: {exc}") from exc
        finally:
            resp.close()
        raw = b"".join(chunks)
        digest = digest_bytes(raw)
        if is_digest(reference) and digest != reference:
            raise MirrorError(f"manifest digest mismatch: asked {reference}, received {digest}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return raw, media_type, digest

    def referrers(self, digest: str, all_tags: set[str]) -> list[dict[str, Any]]:
        """Descriptors of the artifacts whose subject is ``digest``: the referrers API, else the
        ``sha256-<hex>`` tag schema; [] when the registry has neither.

        A registry that answers 404 once is taken to lack the API for the rest of the run, and the
        fallback tag is read only when the tag list has it: an unchanged tag then costs one request."""
        doc: Any = None
        if self.referrers_api is not False:
            resp = self.request("GET", f"{self.base}/referrers/{digest}", accept=mt.OCI_INDEX, expect=(200, 404))
            if resp.status_code == 200 and resp.headers.get("content-type", "").startswith(mt.OCI_INDEX):
                doc = _json(resp.content)
                self.referrers_api = True
            elif resp.status_code == 404 and self.referrers_api is None:
                self.referrers_api = False
            resp.close()
        fallback = digest.replace(":", "-")
        if doc is None and fallback in all_tags:
            resp = self.request("GET", f"{self.base}/manifests/{fallback}", accept=mt.OCI_INDEX, expect=(200, 404))
            doc = _json(resp.content) if resp.status_code == 200 else None
            resp.close()
        items = doc.get("manifests") if isinstance(doc, dict) else None
        return [d for d in items or [] if isinstance(d, dict) and is_digest(str(d.get("digest", "")))]

    def copy_blob(self, target: Target, repo: str, desc: dict[str, Any], counts: TagCounts) -> None:
        digest, size = desc.get("digest"), desc.get("size")
        if not isinstance(digest, str) or not is_digest(digest) or not isinstance(size, int) or size < 0:
            raise MirrorError(f"invalid blob descriptor {str(desc)[:200]}")
        if target.meta.blob_size(repo, digest) is not None:
            counts.blobs_skipped += 1
            return
        have = target.blobs.stat(digest)
        if have is not None and (target.may_link is None or target.may_link(digest)):
            # stored for another repository the mirror may read: link it, fetch nothing
            target.meta.link_blob(repo, digest, have)
            counts.blobs_skipped += 1
            return
        resp = self.request("GET", f"{self.base}/blobs/{digest}", stream=True)
        writer = target.blobs.writer(uuid.uuid4().hex, False)
        try:
            got = 0
            # Each read has the request timeout; the whole body also has a deadline, so an upstream
            # that trickles a byte now and then cannot hold a worker for ever.
            allowed = self.timeout + size / MIN_BYTES_PER_SECOND
            deadline = time.monotonic() + allowed
            for chunk in resp.iter_bytes():  # as they arrive (a chunk size would buffer)
                got += len(chunk)
                if got > size:
                    raise MirrorError(f"blob {digest}: more than the {size} bytes its descriptor says")
                if time.monotonic() > deadline:
                    raise MirrorError(f"blob {digest}: slower than {allowed:.0f} seconds ({got} of {size} bytes)")
                writer.write(chunk)
            if got != size:
                raise MirrorError(f"blob {digest}: truncated ({got} of {size} bytes)")
            stored = writer.commit(digest)
        except DigestMismatch as exc:
            writer.cancel()
            raise MirrorError(f"blob digest mismatch: expected {exc.expected}, received {exc.actual}") from exc
        except httpx.HTTPError as exc:
            writer.cancel()
            raise MirrorError(f"blob {digest}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            writer.cancel()
            raise
        finally:
            resp.close()
        target.meta.link_blob(repo, digest, stored)
        counts.blobs_copied += 1
        counts.bytes += stored


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _wanted_children(doc: dict[str, Any], platforms: list[Platform] | None) -> list[dict[str, Any]]:
    children = [d for d in doc.get("manifests") or [] if isinstance(d, dict)]
    if platforms is None:
        return children
    return [d for d in children if any(p.matches(d.get("platform")) for p in platforms)]


class Copier:
    """Copies manifests (with their blobs and children) from one source into one destination repository."""

    def __init__(self, source: Source, target: Target, m: Mirror, actor: str) -> None:
        self.source = source
        self.target = target
        self.mirror = m
        self.repo = m.destination
        self.actor = actor
        self.platforms = m.platform_filter()

    def store(self, raw: bytes, media_type: str, tag: str | None, counts: TagCounts, depth: int = 0) -> str:
        """Store one manifest after everything it references; returns its digest (rewritten indexes too)."""
        try:
            parsed = parse_manifest(raw, media_type or None)
        except RegistryError as exc:
            raise MirrorError(f"invalid manifest: {exc.detail or exc.message}") from exc
        doc = parsed.doc
        if parsed.media_type in mt.INDEX_TYPES:
            if depth > 1:
                raise MirrorError("image indexes nested too deeply")
            children = _wanted_children(doc, self.platforms)
            if not children:
                raise MirrorError(f"no manifest in the index for platforms {', '.join(self.mirror.platforms or [])}")
            if len(children) != len(doc.get("manifests") or []):
                doc = dict(doc, manifests=children)  # the platform filter dropped some: store the subset
                raw = orjson.dumps(doc)
                parsed = parse_manifest(raw, media_type or None)
            for child in children:
                self.copy_by_digest(str(child.get("digest")), counts, depth + 1)
        else:
            for desc in [doc.get("config"), *(doc.get("layers") or [])]:
                if isinstance(desc, dict) and desc.get("digest") in parsed.blob_refs:
                    self.source.copy_blob(self.target, self.repo, desc, counts)
                    self.target.heartbeat()  # a large image may take longer than one lease
        digest = digest_bytes(raw)
        if self.target.meta.get_manifest(self.repo, digest, True) is not None and tag is None:
            return digest
        if len(raw) > self.target.max_manifest_bytes:
            raise MirrorError(f"manifest larger than {self.target.max_manifest_bytes} bytes")
        record = ManifestRecord(digest, parsed.media_type, raw, parsed.artifact_type, parsed.subject)
        annotations = orjson.dumps(parsed.annotations).decode() if parsed.annotations else None
        try:
            self.target.meta.put_manifest(
                self.repo, record, parsed.blob_refs, parsed.manifest_refs, tag, annotations, self.actor
            )
        except MissingReferences as exc:
            raise MirrorError(f"manifest references what the source did not send: {exc.missing[:3]}") from exc
        except TagImmutable as exc:
            raise MirrorError(str(exc)) from exc
        self.target.on_push(self.repo, digest)
        if self.target.audit is not None:
            detail = {"mirror": self.mirror.name, "source": self.mirror.source, "tag": tag}
            self.target.audit(self.actor, "push", self.repo, digest, detail)
        counts.stored.append(digest)
        return digest

    def copy_by_digest(self, digest: str, counts: TagCounts, depth: int = 0) -> str:
        if not is_digest(digest):
            raise MirrorError(f"invalid digest {digest[:80]!r}")
        if self.target.meta.get_manifest(self.repo, digest, True) is not None:
            return digest
        raw, media_type, _ = self.source.manifest(digest)
        return self.store(raw, media_type, None, counts, depth)

    def copy_referrers(self, subject: str, counts: TagCounts, all_tags: set[str]) -> None:
        for desc in self.source.referrers(subject, all_tags):
            digest = str(desc["digest"])
            if self.target.meta.get_manifest(self.repo, digest, True) is not None:
                continue
            accept = str(desc.get("mediaType") or mt.OCI_MANIFEST)
            raw, media_type, _ = self.source.manifest(digest, accept=accept)
            self.store(raw, media_type, None, counts, 1)
            counts.referrers += 1


def _previous_copy(meta: MetadataStore, mirror_id: int, tag: str, source_digest: str) -> str | None:
    """The digest stored for ``tag`` by an earlier run that copied ``source_digest`` (platform-filtered indexes)."""
    with meta.engine.connect() as conn:
        row = conn.execute(
            select(mirror_run_tags.c.digest)
            .join(mirror_runs, mirror_runs.c.id == mirror_run_tags.c.run_id)
            .where(
                mirror_runs.c.mirror_id == mirror_id,
                mirror_run_tags.c.tag == tag,
                mirror_run_tags.c.source_digest == source_digest,
                mirror_run_tags.c.state.in_(DONE),
            )
            .order_by(mirror_run_tags.c.id.desc())
            .limit(1)
        ).first()
    return row.digest if row else None


def copy_tag(copier: Copier, tag: str, all_tags: set[str]) -> tuple[str, str, str, TagCounts]:
    """Copy one tag; returns (state copied|skipped, source digest, stored digest, counts)."""
    counts = TagCounts()
    meta, repo, m = copier.target.meta, copier.repo, copier.mirror
    source_digest = copier.source.digest_of(tag)
    local = meta.get_manifest(repo, tag, False)
    unchanged = local is not None and (
        local.digest == source_digest or _previous_copy(meta, m.id, tag, source_digest) == local.digest
    )
    if unchanged:
        assert local is not None
        digest, state = local.digest, "skipped"
    else:
        raw, media_type, _ = copier.source.manifest(source_digest)
        digest, state = copier.store(raw, media_type, tag, counts), "copied"
    if m.copy_referrers:
        copier.copy_referrers(source_digest, counts, all_tags)
        prefix = source_digest.replace(":", "-") + "."
        for sig_tag in sorted(t for t in all_tags if t.startswith(prefix)):  # cosign .sig/.att/.sbom tags
            sig_digest = copier.source.digest_of(sig_tag)
            have = meta.get_manifest(repo, sig_tag, False)
            if have is not None and have.digest == sig_digest:
                continue
            raw, media_type, _ = copier.source.manifest(sig_digest)
            copier.store(raw, media_type, sig_tag, counts, 1)
            counts.referrers += 1
    return state, source_digest, digest, counts


# -- runs -------------------------------------------------------------------------------------------------
def set_run(meta: MetadataStore, run_id: int, **values: Any) -> None:
    with meta.transaction() as conn:
        conn.execute(update(mirror_runs).where(mirror_runs.c.id == run_id).values(**values))


def plan_tags(meta: MetadataStore, run_id: int, tags: list[str], action: str = "copy") -> list[str]:
    """Record a pending row per wanted tag (once) and return the tags not yet done, in order.

    ``action`` is ``copy``, or ``delete`` for the tags a push mirror removes from its remote."""
    now = utcnow()
    with meta.transaction() as conn:
        known = {
            r.tag: r.state
            for r in conn.execute(
                select(mirror_run_tags.c.tag, mirror_run_tags.c.state).where(mirror_run_tags.c.run_id == run_id)
            )
        }
        new = [t for t in tags if t not in known]
        if new:
            conn.execute(
                mirror_run_tags.insert(),
                [{"run_id": run_id, "tag": t, "action": action, "state": "pending", "updated_at": now} for t in new],
            )
    return [t for t in tags if known.get(t) not in DONE]


def record_tag(meta: MetadataStore, run_id: int, tag: str, **values: Any) -> None:
    with meta.transaction() as conn:
        conn.execute(
            update(mirror_run_tags)
            .where(mirror_run_tags.c.run_id == run_id, mirror_run_tags.c.tag == tag)
            .values(updated_at=utcnow(), attempts=mirror_run_tags.c.attempts + 1, **values)
        )


def record_copied(
    meta: MetadataStore,
    run_id: int,
    tag: str,
    state: str,
    source_digest: str,
    digest: str,
    counts: TagCounts,
    started: float,
) -> None:
    """A tag that went through (copied, or skipped as unchanged), with its sizes and time."""
    record_tag(
        meta,
        run_id,
        tag,
        action="copy",
        state=state,
        source_digest=source_digest,
        digest=digest,
        bytes=counts.bytes,
        blobs_copied=counts.blobs_copied,
        blobs_skipped=counts.blobs_skipped,
        referrers=counts.referrers,
        error=None,
        seconds=round(time.monotonic() - started, 3),
    )


def run_totals(meta: MetadataStore, run_id: int) -> dict[str, int]:
    out = {"copied": 0, "skipped": 0, "failed": 0, "deleted": 0, "bytes": 0, "blobs_copied": 0, "blobs_skipped": 0}
    with meta.engine.connect() as conn:
        for r in conn.execute(select(mirror_run_tags).where(mirror_run_tags.c.run_id == run_id)).mappings():
            if r["state"] in ("copied", "skipped", "failed", "deleted"):
                out[r["state"]] += 1
            out["bytes"] += r["bytes"] or 0
            out["blobs_copied"] += r["blobs_copied"] or 0
            out["blobs_skipped"] += r["blobs_skipped"] or 0
    return out


def execute(
    m: Mirror, run_id: int, target: Target, credentials: Callable[[], tuple[str, str] | None]
) -> dict[str, Any]:
    """Run (or resume) ``run_id`` of mirror ``m``; returns the run's final counts and state.

    ``state`` is ``succeeded``, ``retrying`` (failed tags or an unreachable source, and attempts
    remain: the caller queues the run again after ``next_retry_at``), ``partial`` or ``failed``.
    """
    meta = target.meta
    with meta.engine.connect() as conn:
        row = conn.execute(select(mirror_runs).where(mirror_runs.c.id == run_id)).mappings().first()
    if row is None:
        raise MirrorError(f"no mirror run {run_id}")
    attempt = row["attempt"] + 1
    set_run(meta, run_id, state="running", attempt=attempt, started_at=row["started_at"] or utcnow(), error=None)
    actor = m.robot or f"mirror:{m.name}"
    error: str | None = None
    requests = 0
    action = "pull" if m.push else "push"
    refusal = target.robot_may(m.robot, m.destination, action) if m.robot and target.robot_may else None
    creds = None
    if not refusal:
        try:
            creds = credentials()
        except ValueError as exc:  # a sealed password the key cannot open: retrying will not help
            refusal = str(exc)
    if refusal:
        error = refusal
    elif m.push:
        from hallmark.mirror.push import Remote, push_all  # push builds on this module

        remote = Remote(m, creds)
        try:
            error = push_all(remote, target, m, run_id)
        finally:
            remote.close()
        requests = remote.requests
    else:
        source = Source(m, creds, target.max_manifest_bytes)
        try:
            error = _copy_all(source, target, m, run_id, actor)
        finally:
            source.close()
        requests = source.requests
    totals = run_totals(meta, run_id)
    if error is None and not totals["failed"]:
        state, retry_at = "succeeded", None
    elif attempt < MAX_ATTEMPTS and not refusal:
        state, retry_at = "retrying", utcnow() + dt.timedelta(seconds=retry_delay(attempt))
    else:
        state, retry_at = ("partial" if totals["copied"] + totals["skipped"] + totals["deleted"] else "failed"), None
    set_run(meta, run_id, state=state, error=error, finished_at=utcnow(), next_retry_at=retry_at, **totals)
    return {"run": run_id, "state": state, "attempt": attempt, "error": error, "requests": requests, **totals}


def _copy_all(source: Source, target: Target, m: Mirror, run_id: int, actor: str) -> str | None:
    """Every wanted tag not yet done in this run; returns the run-level error (tag errors are per tag)."""
    try:
        all_tags = source.tags()
    except (OciError, MirrorError) as exc:
        return f"listing tags of {m.source}: {exc}"
    wanted = sorted(t for t in all_tags if m.tags.wants(t))
    copier = Copier(source, target, m, actor)
    tag_set = set(all_tags)
    for tag in plan_tags(target.meta, run_id, wanted):
        started = time.monotonic()
        try:
            state, source_digest, digest, c = copy_tag(copier, tag, tag_set)
        except TagGone as exc:
            record_tag(target.meta, run_id, tag, state="skipped", error=str(exc), seconds=time.monotonic() - started)
        except (OciError, MirrorError, OSError) as exc:
            log.warning("mirror %s: tag %s failed: %s", m.name, tag, exc)
            record_tag(
                target.meta, run_id, tag, state="failed", error=str(exc)[:2000], seconds=time.monotonic() - started
            )
        else:
            record_copied(target.meta, run_id, tag, state, source_digest, digest, c, started)
        target.heartbeat()
    return None

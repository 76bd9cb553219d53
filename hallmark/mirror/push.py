"""Push mirroring: replicate the approved images of a local repository to a remote registry.

A push mirror (``direction = 'push'``) reads its local ``destination`` repository and writes to the
remote named by its source columns, with the remote's credentials (Basic or Bearer through
``RegistryClient``). Only tags whose image is ``approved`` in the catalog leave: staging, deprecated
and retired images are never pushed, so the remote only ever sees what passed the gates. The
catalog holds stages per platform image: an index tag leaves once every image it carries (after
the platform filter) is approved.

Per tag: the digest the remote would receive is computed locally (an index rewritten by the platform
filter included) and compared with one ``HEAD`` of the remote tag; an unchanged tag costs that one
request. Otherwise blobs go first (``HEAD``; a cross-repository mount from another push mirror's
repository on the same registry; else an upload streamed from the blob store), then child manifests,
then the tagged manifest, so the remote never holds a tag whose content is missing. Referrers
(signatures, SBOMs) follow their subject; for a registry without the referrers API the
``sha256-<hex>`` tag schema index is kept up to date. Runs are recorded like pull runs.

With ``delete_remote``, a run then removes from the remote the tags it pushed whose image was
retired here, or whose tag or manifest was deleted here (``DELETE /v2/<name>/manifests/<digest>``).
Deprecated images stay: deprecation warns, it does not withdraw. What the mirror pushed is read
from its own per-tag run rows, so content the remote held before (or got from someone else) is
never deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

from hallmark.catalog.store import CatalogStore
from hallmark.digest import digest_bytes, is_digest
from hallmark.metadata.store import MetadataStore
from hallmark.mirror.definitions import Mirror
from hallmark.mirror.sync import DONE, MirrorError, TagCounts, Target, plan_tags, record_copied, record_tag
from hallmark.mirror.tables import mirror_run_tags, mirror_runs, mirrors
from hallmark.oci import mediatypes as mt
from hallmark.oci.registry import RegistryClient
from hallmark.oci.source import OciError, Platform
from hallmark.pipeline.store import PipelineStore
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import parse_manifest

log = logging.getLogger(__name__)

APPROVED = "approved"
RETIRED = "retired"
READ_CHUNK = 1 << 20
MAX_REFERRERS = 1000
ID_BATCH = 500  # row ids per IN (...) query, well under SQLite's bound-parameter limit
GONE = "already gone from the remote"


@dataclass
class Prepared:
    """A local manifest as the remote will receive it (an index filtered to the wanted platforms)."""

    raw: bytes
    media_type: str
    digest: str
    children: list[str]
    blobs: list[dict[str, Any]]


class Remote:
    """The remote repository, pull+push, counting requests (a run reports how many it made)."""

    def __init__(self, m: Mirror, credentials: tuple[str, str] | None) -> None:
        self.client = RegistryClient(
            m.source_registry,
            m.source_repository,
            insecure=m.insecure,
            push=True,
            credentials=credentials,
            timeout=m.timeout_seconds,
            delete=m.delete_remote,
        )
        self.base = self.client.base
        self.requests = 0

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        return self.client.request(method, url, **kwargs)

    def close(self) -> None:
        self.client.close()

    def digest_of(self, reference: str) -> str | None:
        """The digest the remote holds under ``reference``; None when it has nothing there."""
        accept = mt.ACCEPT_MANIFESTS
        resp = self.request("HEAD", f"{self.base}/manifests/{reference}", accept=accept, expect=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("docker-content-digest", "")
        if is_digest(digest):
            return digest
        resp = self.request("GET", f"{self.base}/manifests/{reference}", accept=accept)
        return digest_bytes(resp.content)

    def has_blob(self, digest: str) -> bool:
        resp = self.request("HEAD", f"{self.base}/blobs/{digest}", expect=(200, 404))
        resp.close()
        return resp.status_code == 200

    def put_blob(self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]], mount_from: str | None) -> bool:
        """Mount (True) or upload (False) one blob. A refused mount answers 202 with an upload
        session (distribution spec), which the upload then uses: a failed mount costs nothing."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        resp = self.request("POST", f"{self.base}/blobs/uploads/", params=params, expect=(201, 202))
        resp.close()
        if resp.status_code == 201:
            return True
        location = resp.headers.get("location")
        if not location:
            raise MirrorError("the remote opened an upload without a Location")
        url = httpx.URL(self.client.url(location)).copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        put = self.request("PUT", str(url), content=chunks(), headers=headers, expect=(201,))
        put.close()
        return False

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> bool:
        """Store a manifest; True when the remote said it indexed the ``subject`` (``OCI-Subject``)."""
        resp = self.request(
            "PUT",
            f"{self.base}/manifests/{reference}",
            content=raw,
            headers={"Content-Type": media_type},
            expect=(201,),
        )
        resp.close()
        return "oci-subject" in resp.headers

    def delete_manifest(self, reference: str) -> tuple[int, str]:
        """DELETE a manifest by digest (it and every tag on it go) or a tag alone; returns the status and
        the registry's error code: 202 deleted, 404 already gone, 400/405 refused (deletes disabled, or
        tags cannot be deleted alone: the distribution spec allows either answer)."""
        resp = self.request("DELETE", f"{self.base}/manifests/{reference}", expect=(200, 202, 400, 404, 405))
        code = ""
        if resp.status_code >= 400:
            try:
                errors = orjson.loads(resp.content).get("errors") or [{}]
                code = str(errors[0].get("code") or "")
            except (orjson.JSONDecodeError, AttributeError, IndexError):
                code = ""
        resp.close()
        return resp.status_code, code

    def fallback_index(self, subject: str) -> list[dict[str, Any]]:
        """The descriptors in the remote's ``sha256-<hex>`` referrers tag ([] when there is none)."""
        ref = subject.replace(":", "-")
        resp = self.request("GET", f"{self.base}/manifests/{ref}", accept=mt.OCI_INDEX, expect=(200, 404))
        if resp.status_code == 404:
            return []
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return []
        items = doc.get("manifests") if isinstance(doc, dict) else None
        return [d for d in items or [] if isinstance(d, dict)]


class Pusher:
    """Pushes local manifests (blobs and children first) of one repository to one remote repository."""

    def __init__(self, remote: Remote, target: Target, m: Mirror, mount_from: str | None) -> None:
        self.remote = remote
        self.target = target
        self.mirror = m
        self.repo = m.destination
        self.platforms: list[Platform] | None = m.platform_filter()
        self.mount_from = mount_from

    def prepare(self, digest: str) -> Prepared:
        rec = self.target.meta.get_manifest(self.repo, digest, True)
        if rec is None:
            raise MirrorError(f"{self.repo}@{digest} is not stored")
        try:
            parsed = parse_manifest(rec.content, rec.media_type or None)
        except RegistryError as exc:
            raise MirrorError(f"invalid local manifest {digest}: {exc.detail or exc.message}") from exc
        raw, doc = rec.content, parsed.doc
        if parsed.media_type in mt.INDEX_TYPES:
            children = [d for d in doc.get("manifests") or [] if isinstance(d, dict)]
            wanted = children
            if self.platforms is not None:
                wanted = [d for d in children if any(p.matches(d.get("platform")) for p in self.platforms)]
                if not wanted:
                    raise MirrorError(
                        f"no manifest in the index for platforms {', '.join(self.mirror.platforms or [])}"
                    )
                if len(wanted) != len(children):
                    raw = orjson.dumps(dict(doc, manifests=wanted))
            return Prepared(raw, parsed.media_type, digest_bytes(raw), [str(d.get("digest")) for d in wanted], [])
        blobs = [d for d in [doc.get("config"), *(doc.get("layers") or [])] if isinstance(d, dict)]
        blobs = [d for d in blobs if d.get("digest") in parsed.blob_refs]
        return Prepared(raw, parsed.media_type, digest, [], blobs)

    def push(self, prepared: Prepared, reference: str, counts: TagCounts, depth: int = 0) -> bool:
        """Everything ``prepared`` references, then itself under ``reference``; returns OCI-Subject support."""
        for child in prepared.children:
            if not is_digest(child):
                raise MirrorError(f"invalid digest {child[:80]!r} in index")
            if depth > 1:
                raise MirrorError("image indexes nested too deeply")
            if self.remote.digest_of(child) == child:
                continue
            self.push(self.prepare(child), child, counts, depth + 1)
        for desc in prepared.blobs:
            self.push_blob(desc, counts)
            self.target.heartbeat()
        return self.remote.put_manifest(reference, prepared.raw, prepared.media_type)

    def push_blob(self, desc: dict[str, Any], counts: TagCounts) -> None:
        digest, size = str(desc.get("digest")), desc.get("size")
        if not is_digest(digest) or not isinstance(size, int) or size < 0:
            raise MirrorError(f"invalid blob descriptor {str(desc)[:200]}")
        if self.remote.has_blob(digest):
            counts.blobs_skipped += 1
            return
        stored = self.target.blobs.stat(digest)
        if stored is None:
            raise MirrorError(f"blob {digest} is missing from the local store")

        def chunks() -> Iterator[bytes]:
            with self.target.blobs.open(digest) as f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk

        if self.remote.put_blob(digest, stored, chunks, self.mount_from):
            counts.blobs_skipped += 1  # mounted: nothing sent
            return
        counts.blobs_copied += 1
        counts.bytes += stored

    def push_referrers(self, subject: str, counts: TagCounts) -> None:
        """The local referrers of ``subject`` the remote lacks, then the tag schema index if needed."""
        local = self.target.meta.referrers(self.repo, subject, None, MAX_REFERRERS, None)
        indexed = True
        pushed = []
        for ref in local:
            counts.referrers += 1
            if self.remote.digest_of(ref.digest) == ref.digest:
                continue
            indexed = self.push(self.prepare(ref.digest), ref.digest, counts, 1) and indexed
            pushed.append(ref)
        if indexed or not pushed:
            return
        have = self.remote.fallback_index(subject)
        known = {str(d.get("digest")) for d in have}
        for ref in pushed:
            if ref.digest in known:
                continue
            desc: dict[str, Any] = {"mediaType": ref.media_type, "digest": ref.digest, "size": ref.size}
            if ref.artifact_type:
                desc["artifactType"] = ref.artifact_type
            if ref.annotations:
                desc["annotations"] = orjson.loads(ref.annotations)
            have.append(desc)
        index = orjson.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": have})
        self.remote.put_manifest(subject.replace(":", "-"), index, mt.OCI_INDEX)


def stage_of(catalog: CatalogStore, repo: str, digest: str) -> str:
    row = catalog.get(repo, digest)
    return str(row["stage"]) if row else "staging"


def releasable(pusher: Pusher, catalog: CatalogStore, images: PipelineStore, digest: str) -> bool:
    """Approved, or an index whose every image (after the platform filter) is approved.

    The catalog holds stages per platform image, not per index; children that are not images
    (attestation manifests) go along with the images they describe."""
    if stage_of(catalog, pusher.repo, digest) == APPROVED:
        return True
    try:
        children = pusher.prepare(digest).children
    except MirrorError:
        return False
    runnable = [c for c in children if images.get_image(pusher.repo, c) is not None]
    return bool(runnable) and all(stage_of(catalog, pusher.repo, c) == APPROVED for c in runnable)


def _referrers_done(meta: MetadataStore, m: Mirror, tag: str, digest: str) -> int:
    """How many referrers earlier runs saw on the remote for ``tag`` at ``digest``."""
    with meta.engine.connect() as conn:
        total = conn.execute(
            select(func.coalesce(func.sum(mirror_run_tags.c.referrers), 0))
            .join(mirror_runs, mirror_runs.c.id == mirror_run_tags.c.run_id)
            .where(
                mirror_runs.c.mirror_id == m.id,
                mirror_run_tags.c.tag == tag,
                mirror_run_tags.c.source_digest == digest,
                mirror_run_tags.c.state.in_(DONE),
            )
        ).scalar()
    return int(total or 0)


def push_tag(pusher: Pusher, tag: str, local_digest: str) -> tuple[str, str, TagCounts]:
    """Push one approved tag; returns (copied|skipped, the digest the remote holds, counts)."""
    counts = TagCounts()
    prepared = pusher.prepare(local_digest)
    meta, m = pusher.target.meta, pusher.mirror
    if pusher.remote.digest_of(tag) == prepared.digest:
        state = "skipped"
        if m.copy_referrers:
            wanted = len(meta.referrers(pusher.repo, local_digest, None, MAX_REFERRERS, None))
            if wanted > _referrers_done(meta, m, tag, local_digest):
                pusher.push_referrers(local_digest, counts)
    else:
        pusher.push(prepared, tag, counts)
        counts.stored.append(prepared.digest)
        state = "copied"
        if m.copy_referrers:
            pusher.push_referrers(local_digest, counts)
        if pusher.target.audit is not None:
            detail = {"mirror": m.name, "remote": m.source, "tag": tag, "pushed": prepared.digest}
            actor = m.robot or f"mirror:{m.name}"
            pusher.target.audit(actor, "mirror.push", pusher.repo, local_digest, detail)
    return state, prepared.digest, counts


def mount_source(meta: MetadataStore, m: Mirror) -> str | None:
    """Another push mirror's repository on the same remote registry: blobs it holds can be mounted."""
    with meta.engine.connect() as conn:
        row = conn.execute(
            select(mirrors.c.source_repository)
            .where(
                mirrors.c.direction == "push",
                mirrors.c.source_registry == m.source_registry,
                mirrors.c.source_repository != m.source_repository,
                mirrors.c.id != m.id,
            )
            .order_by(mirrors.c.id)
            .limit(1)
        ).first()
    return str(row.source_repository) if row else None


def push_all(remote: Remote, target: Target, m: Mirror, run_id: int) -> str | None:
    """Every wanted, approved local tag not yet done in this run, then (``delete_remote``) the removals;
    returns the run-level error."""
    meta = target.meta
    local = meta.list_tags(m.destination)
    if local is None and not m.delete_remote:
        return f"{m.destination} does not exist here"
    catalog, images = CatalogStore(meta), PipelineStore(meta)
    pusher = Pusher(remote, target, m, mount_source(meta, m))
    approved: dict[str, str] = {}
    for tag in sorted(t for t in local or [] if m.tags.wants(t)):
        rec = meta.get_manifest(m.destination, tag, False)
        if rec is not None and releasable(pusher, catalog, images, rec.digest):
            approved[tag] = rec.digest
    for tag in plan_tags(meta, run_id, list(approved)):
        started = time.monotonic()
        try:
            state, digest, c = push_tag(pusher, tag, approved[tag])
        except (OciError, MirrorError, OSError) as exc:
            log.warning("push mirror %s: tag %s failed: %s", m.name, tag, exc)
            record_tag(
                meta, run_id, tag, action="copy", state="failed", error=str(exc)[:2000],
                seconds=time.monotonic() - started,
            )  # fmt: skip
        else:
            record_copied(meta, run_id, tag, state, approved[tag], digest, c, started)
        target.heartbeat()
    if m.delete_remote:
        remove_withdrawn(pusher, catalog, set(local or []), set(approved), run_id)
    return None if local is not None else f"{m.destination} does not exist here"


# -- delete_remote ------------------------------------------------------------------------------------
@dataclass
class Pushed:
    """What the runs of a push mirror last recorded for one remote tag."""

    tag: str
    local: str  # the local digest it was pushed from
    remote: str  # the digest the remote holds under the tag
    ours: bool  # a run of this mirror copied it there (and has not deleted it since)


def pushed_tags(meta: MetadataStore, mirror_id: int) -> dict[str, Pushed]:
    """Per tag, what the remote holds according to the mirror's runs; tags last recorded deleted are absent.

    A tag is ``ours`` only when the mirror's newest ``copied`` row for it holds the digest last seen
    there: a tag found already in place (``skipped`` without an earlier copy) was put there by
    someone else, and one the remote moved since is no longer what the mirror pushed."""
    t = mirror_run_tags.c
    with meta.engine.connect() as conn:
        latest = conn.execute(
            select(t.tag, t.state, func.max(t.id))
            .join(mirror_runs, mirror_runs.c.id == t.run_id)
            .where(mirror_runs.c.mirror_id == mirror_id, t.state.in_((*DONE, "deleted")))
            .group_by(t.tag, t.state)
        ).all()
        ids = [int(row_id) for _, _, row_id in latest]
        rows: dict[int, Any] = {}
        for i in range(0, len(ids), ID_BATCH):
            q = select(t.id, t.state, t.source_digest, t.digest).where(t.id.in_(ids[i : i + ID_BATCH]))
            rows.update((int(r.id), r) for r in conn.execute(q))
    per_tag: dict[str, dict[str, int]] = {}
    for tag, state, row_id in latest:
        per_tag.setdefault(tag, {})[state] = int(row_id)
    out: dict[str, Pushed] = {}
    for tag, by_state in per_tag.items():
        last = rows[max(by_state.values())]
        if last.state == "deleted" or not last.digest or not last.source_digest:
            continue
        copied = by_state.get("copied")
        ours = copied is not None and rows[copied].digest == last.digest and by_state.get("deleted", 0) < copied
        out[tag] = Pushed(tag, str(last.source_digest), str(last.digest), ours)
    return out


def withdrawal_reason(pusher: Pusher, catalog: CatalogStore, local_tags: set[str], p: Pushed) -> str | None:
    """Why the remote should no longer hold ``p`` (None: it stays). Deprecated images stay on purpose."""
    if p.tag not in local_tags:
        return "tag deleted here"
    if pusher.target.meta.get_manifest(pusher.repo, p.local, True) is None:
        return "manifest deleted here"
    if stage_of(catalog, pusher.repo, p.local) == RETIRED:
        return "retired here"
    try:
        children = pusher.prepare(p.local).children
    except MirrorError:
        return None
    if any(stage_of(catalog, pusher.repo, c) == RETIRED for c in children):
        return "an image of the index retired here"
    return None


def remove_withdrawn(
    pusher: Pusher, catalog: CatalogStore, local_tags: set[str], pushing: set[str], run_id: int
) -> None:
    """Delete from the remote the tags this mirror pushed whose image was retired or deleted here.

    One ``DELETE`` by digest per remote manifest removes it with its tags; when a tag the mirror keeps
    still points at that manifest, only the withdrawn tag is deleted (``DELETE …/manifests/<tag>``),
    and where the remote cannot do that the tag stays, with a note. Each tag is checked first (one
    ``HEAD``): one the remote moved to another manifest is no longer the mirror's and stays."""
    meta, m = pusher.target.meta, pusher.mirror
    held = pushed_tags(meta, m.id)
    reasons: dict[str, str] = {}
    for tag, p in sorted(held.items()):
        if p.ours and tag not in pushing:
            reason = withdrawal_reason(pusher, catalog, local_tags, p)
            if reason:
                reasons[tag] = reason
    todo = plan_tags(meta, run_id, sorted(reasons), action="delete")
    by_digest: dict[str, list[Pushed]] = {}
    for tag in todo:
        by_digest.setdefault(held[tag].remote, []).append(held[tag])
    going = set(todo)
    for digest, group in by_digest.items():
        keepers = sorted(t for t, p in held.items() if p.remote == digest and t not in going)
        Withdrawal(pusher, run_id, reasons, keepers).remove(digest, group)
        pusher.target.heartbeat()


class Withdrawal:
    """The removal of one remote manifest's withdrawn tags, recorded per tag like pushes, audited
    ``mirror.delete_remote`` per tag removed."""

    def __init__(self, pusher: Pusher, run_id: int, reasons: dict[str, str], keepers: list[str]) -> None:
        self.pusher = pusher
        self.remote = pusher.remote
        self.run_id = run_id
        self.reasons = reasons
        self.keepers = keepers
        self.started = time.monotonic()

    def record(self, p: Pushed, state: str, note: str, error: str | None = None, digest: str | None = None) -> None:
        record_tag(
            self.pusher.target.meta, self.run_id, p.tag, action="delete", state=state, source_digest=p.local,
            digest=digest or p.remote, note=note[:2000], error=error, bytes=0, blobs_copied=0, blobs_skipped=0,
            referrers=0, seconds=round(time.monotonic() - self.started, 3),
        )  # fmt: skip

    def deleted(self, p: Pushed, how: str, removed: bool = True) -> None:
        """Recorded ``deleted`` either way; audited only when this request removed it (not already gone)."""
        self.record(p, "deleted", f"{self.reasons[p.tag]}: {how}")
        target, m = self.pusher.target, self.pusher.mirror
        if target.audit is not None and removed:
            detail = {"mirror": m.name, "remote": m.source, "tag": p.tag, "deleted": p.remote}
            detail["reason"] = self.reasons[p.tag]
            target.audit(m.robot or f"mirror:{m.name}", "mirror.delete_remote", self.pusher.repo, p.local, detail)

    def remove(self, digest: str, group: list[Pushed]) -> None:
        live: list[Pushed] = []
        for p in group:  # the remote tag must still hold what the mirror pushed
            try:
                holds = self.remote.digest_of(p.tag)
            except (OciError, MirrorError) as exc:
                self.record(p, "failed", self.reasons[p.tag], error=str(exc)[:2000])
                continue
            if holds is not None and holds != digest:
                note = f"{self.reasons[p.tag]}, but left alone: the remote tag now holds {holds}, not what was pushed"
                self.record(p, "skipped", note, digest=holds)
            elif holds is None and self.keepers:
                self.deleted(p, GONE, removed=False)
            else:
                live.append(p)
        if live and not self.keepers:
            self.guarded(partial(self.remove_manifest, digest, live), live)
        for p in live if self.keepers else []:
            self.guarded(partial(self.remove_tag, p), [p])

    def guarded(self, delete: Callable[[], None], tags: list[Pushed]) -> None:
        """A transport error or an unexpected answer fails these tags (the run retries them), never the run."""
        try:
            delete()
        except (OciError, OSError) as exc:
            log.warning("push mirror %s: a remote delete failed: %s", self.pusher.mirror.name, exc)
            for p in tags:
                self.record(p, "failed", self.reasons[p.tag], error=str(exc)[:2000])

    def remove_manifest(self, digest: str, live: list[Pushed]) -> None:
        status, code = self.remote.delete_manifest(digest)
        for p in live:
            if status in (200, 202):
                self.deleted(p, "manifest deleted on the remote")
            elif status == 404:
                self.deleted(p, GONE, removed=False)
            elif status == 405:
                error = f"the remote does not allow deletes (405 {code or 'Method Not Allowed'})"
                self.record(p, "failed", self.reasons[p.tag], error=error)
            else:
                self.record(p, "failed", self.reasons[p.tag], error=f"the remote refused the delete ({status} {code})")

    def remove_tag(self, p: Pushed) -> None:
        """The manifest stays (``keepers`` still hold it): the tag alone, where the remote can."""
        status, code = self.remote.delete_manifest(p.tag)
        kept = ", ".join(self.keepers)
        if status in (200, 202):
            self.deleted(p, f"tag deleted on the remote ({p.remote} stays: still pushed as {kept})")
        elif status == 404:
            self.deleted(p, GONE, removed=False)
        else:
            answer = f"{status} {code}".strip()
            note = (
                f"{self.reasons[p.tag]}, but kept: the remote cannot delete a tag alone (it answered {answer}) "
                f"and deleting {p.remote} would also remove {kept}"
            )
            self.record(p, "skipped", note)

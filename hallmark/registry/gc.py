"""Garbage collection: remove blobs no manifest uses any more, safely while pushes go on.

0. Manifests (only with a :class:`ManifestPolicy`): a manifest that a tag once held, that no tag
   holds now, and that no tag left within its repository's time-machine window, is deleted,
   with the manifests only it kept (children of an index it was, its referrers: reports, SBOMs,
   signatures); never one still used by a manifest that stays, or one the policy protects.
   Manifests never tagged (pushed by digest) are not touched. Everything is re-checked in
   the deleting transaction, so a tag pushed or restored meanwhile keeps its manifest.
1. Links: a blob linked to a repository but referenced by none of its manifests, and
   linked longer ago than the grace period (a client pushes blobs before the manifest
   that uses them), is unlinked; the check is repeated inside the deleting transaction.
2. Blobs: a blob no repository links, created before the grace period, is first renamed
   out of sight, then its row is deleted only if it is still unlinked; otherwise it is
   put back. A push of the same content meanwhile always renames its own copy into
   place, so a collected blob can never leave a linked blob without its file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from hallmark import metrics
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.storage.base import BlobStore


@dataclass(frozen=True)
class ManifestPolicy:
    """Which untagged manifests may go: ``window(repo)`` is how long after a tag left a manifest it
    stays restorable (the time machine); ``protected(repo, digest)`` keeps one regardless."""

    window: Callable[[str], dt.timedelta]
    protected: Callable[[str, str], bool] = lambda repo, digest: False


@dataclass
class GcResult:
    dry_run: bool
    unlinked: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept: list[str] = field(default_factory=list)  # linked again while being collected
    manifests: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest) deleted

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "manifests": [f"{r}@{d}" for r, d in self.manifests],
            "unlinked": [f"{r}@{d}" for r, d in self.unlinked],
            "deleted": self.deleted,
            "freed_bytes": self.freed_bytes,
            "kept": self.kept,
        }


def collect(
    meta: MetadataStore,
    blobs: BlobStore,
    grace_seconds: int = 3600,
    dry_run: bool = False,
    manifests: ManifestPolicy | None = None,
) -> GcResult:
    """One garbage collection (counted in ``hallmark_gc_runs_total`` unless a dry run)."""
    try:
        result = _collect(meta, blobs, grace_seconds, dry_run, manifests)
    except Exception:
        metrics.observe_gc(ok=False)
        raise
    if not dry_run:
        metrics.observe_gc(ok=True)
    return result


def _collect(
    meta: MetadataStore,
    blobs: BlobStore,
    grace_seconds: int,
    dry_run: bool,
    manifests: ManifestPolicy | None,
) -> GcResult:
    before = utcnow() - dt.timedelta(seconds=grace_seconds)
    result = GcResult(dry_run)
    if manifests is not None:
        result.manifests = _collect_manifests(meta, manifests, dry_run)
    links = meta.unreferenced_links(before)
    if dry_run:
        result.unlinked = links
        unlinked_now = {d for _, d in links}
        candidates = set(meta.unreferenced_blobs(before))
        # A blob whose only links are about to go would be collected too.
        for digest in sorted(candidates | {d for d in unlinked_now if _only_these_links(meta, d, links)}):
            result.deleted.append(digest)
            result.freed_bytes += blobs.stat(digest) or 0
        return result
    if links:
        meta.unlink_blobs(links)
        result.unlinked = links
    for digest in meta.unreferenced_blobs(before):
        size = blobs.stat(digest) or 0
        trashed = blobs.trash(digest)
        if meta.forget_blob(digest):
            if trashed:
                blobs.purge(digest)
            result.deleted.append(digest)
            result.freed_bytes += size
        elif trashed:
            blobs.untrash(digest)
            result.kept.append(digest)
    return result


def _only_these_links(meta: MetadataStore, digest: str, links: list[tuple[str, str]]) -> bool:
    going = {r for r, d in links if d == digest}
    return set(meta.repositories_linking(digest)) <= going


def _collect_manifests(meta: MetadataStore, policy: ManifestPolicy, dry_run: bool) -> list[tuple[str, str]]:
    now = utcnow()
    by_repo: dict[str, dict[str, dt.datetime]] = {}
    for (repo, digest), left in meta.dropped_manifests().items():
        by_repo.setdefault(repo, {})[digest] = left
    out: list[tuple[str, str]] = []
    for repo, dropped in sorted(by_repo.items()):
        cutoff = now - policy.window(repo)
        going = manifests_to_collect(repo, dropped, cutoff, meta.manifest_graph(repo), policy.protected)
        if not going:
            continue
        deleted = sorted(going) if dry_run else meta.forget_manifests(repo, going, cutoff)
        out += [(repo, d) for d in deleted]
    return out


def manifests_to_collect(
    repo: str,
    dropped: dict[str, dt.datetime],
    cutoff: dt.datetime,
    graph: tuple[set[str], dict[str, str | None], dict[str, list[str]]],
    protected: Callable[[str, str], bool],
) -> set[str]:
    """The manifests of one repository to delete: those a tag left before ``cutoff`` (``dropped``:
    digest -> when a tag last left it), less any a kept manifest uses, plus what only they kept
    (untagged children no kept manifest uses, referrers of deleted subjects)."""
    tagged, subjects, children = graph
    parents: dict[str, set[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)

    def may_go(d: str) -> bool:
        recent = d in dropped and dropped[d] >= cutoff
        return d in subjects and d not in tagged and not recent and not protected(repo, d)

    going = {d for d, left in dropped.items() if left < cutoff and may_go(d)}
    changed = True
    while changed:  # a manifest that a kept one uses stays (and so may what it uses)
        changed = False
        for d in sorted(going):
            if any(p not in going for p in parents.get(d, ())):
                going.discard(d)
                changed = True
    changed = True
    while changed:  # what only the deleted manifests kept goes with them
        changed = False
        extra = {kid for d in going for kid in children.get(d, ())}
        extra |= {d for d, subject in subjects.items() if subject is not None and subject in going}
        for d in sorted(extra - going):
            if may_go(d) and all(p in going for p in parents.get(d, ())):
                going.add(d)
                changed = True
    return going

"""Garbage collection: remove blobs no manifest uses any more, safely while pushes go on.

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
from dataclasses import dataclass, field

from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.storage.base import BlobStore


@dataclass
class GcResult:
    dry_run: bool
    unlinked: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept: list[str] = field(default_factory=list)  # linked again while being collected

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "unlinked": [f"{r}@{d}" for r, d in self.unlinked],
            "deleted": self.deleted,
            "freed_bytes": self.freed_bytes,
            "kept": self.kept,
        }


def collect(meta: MetadataStore, blobs: BlobStore, grace_seconds: int = 3600, dry_run: bool = False) -> GcResult:
    before = utcnow() - dt.timedelta(seconds=grace_seconds)
    result = GcResult(dry_run)
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

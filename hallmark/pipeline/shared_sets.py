"""Advisory sets and rule bundles for replicas that share no disk, only the database and the blob store.

``hallmark db update`` runs on one replica and builds the set folder in its own data folder. When the
blob store is shared (``[storage] driver = "s3"``, or a ``[storage] path`` outside the data folder),
every file of the set, and of a new rule bundle, is also stored in the blob store's reserved namespace
(:mod:`hallmark.storage.shared`), with a manifest (path, digest, size of each file) whose digest the
set's database row records (``sources.bundle``, ``sources.rules_bundle``) in the transaction that
activates it. The switch is that row: every replica reads it, and the ``advisories`` state version is
bumped with it. A replica whose data folder lacks the active set fetches the files, checks every
digest, and renames the complete folder into place, so a reader sees the whole set or none; rules are
swapped in the same way under a lock. The embedded default (blobs inside the data folder) publishes
nothing: there is no other replica to read it, and the set is not kept twice on one disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from hallmark.config import Config
from hallmark.storage.base import BlobNotFound, BlobStore, StorageUnavailable
from hallmark.storage.shared import file_digest

log = logging.getLogger(__name__)
MANIFEST_SCHEMA = "https://hallmark.dev/schemas/shared-bundle/v1"
_MAX_MANIFEST = 64 << 20
_CHUNK = 1 << 20


class SharedSetError(Exception):
    """The active set (or rule bundle) is not in this data folder and cannot be fetched intact."""


def shared_storage(config: Config) -> bool:
    """Whether other replicas can read this blob store (so sets must be published to it)."""
    if config.storage.driver != "filesystem":
        return True
    return not config.blob_path.is_relative_to(config.data_path)


def publish_folder(blobs: BlobStore, folder: Path) -> str:
    """Store every file of ``folder`` (unless already there) and its manifest; returns the manifest digest."""
    shared = blobs.shared()
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = file_digest(path)
        size = path.stat().st_size
        if shared.stat(digest) != size:  # unchanged feeds are stored once for every set
            shared.put(digest, path)
        entries.append({"path": path.relative_to(folder).as_posix(), "digest": digest, "size": size})
    body = orjson.dumps({"schema": MANIFEST_SCHEMA, "files": entries})
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with tempfile.NamedTemporaryFile(dir=folder.parent, prefix=".manifest-") as tmp:
        tmp.write(body)
        tmp.flush()
        if shared.stat(digest) != len(body):
            shared.put(digest, Path(tmp.name))
    return digest


def _read_manifest(blobs: BlobStore, digest: str) -> list[dict[str, Any]]:
    try:
        with blobs.shared().open(digest) as f:
            body = f.read(_MAX_MANIFEST + 1)
    except BlobNotFound as exc:
        raise SharedSetError(f"bundle {digest} is missing from the blob store") from exc
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise SharedSetError(f"bundle {digest}: the stored manifest does not match its digest")
    files = orjson.loads(body).get("files")
    if not isinstance(files, list):
        raise SharedSetError(f"bundle {digest}: not a bundle manifest")
    return files


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(p in ("..", ".", "") for p in rel.parts):
        raise SharedSetError(f"bundle names an unsafe path {path!r}")
    return rel


def fetch_folder(blobs: BlobStore, digest: str, dest: Path) -> None:
    """Fetch the bundle ``digest`` into ``dest`` (absent before): all files verified, then one rename.

    Several processes may fetch at once: each writes its own work folder, the first rename wins and
    the others discard theirs.
    """
    files = _read_manifest(blobs, digest)
    shared = blobs.shared()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.fetch")
    work.mkdir()
    try:
        for entry in files:
            rel = _safe_relative(str(entry["path"]))
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            try:
                with shared.open(str(entry["digest"])) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            except BlobNotFound as exc:
                raise SharedSetError(f"bundle {digest}: {rel} ({entry['digest']}) is missing") from exc
            if "sha256:" + h.hexdigest() != entry["digest"]:
                raise SharedSetError(f"bundle {digest}: {rel} does not match its digest {entry['digest']}")
        try:
            os.replace(work, dest)
        except OSError:
            if not dest.is_dir():
                raise
            # Another process put the same set in place meanwhile.
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sets_root(config: Config) -> Path:
    return config.data_path / "advisories"


def ensure_set(config: Config, blobs: BlobStore | None, meta: dict[str, Any]) -> Path:
    """The active set's folder in this data folder, fetched from the blob store first when missing."""
    root = _sets_root(config)
    folder = root / str(meta["sources"]["folder"])
    if folder.is_dir():
        return folder
    bundle = meta["sources"].get("bundle")
    if blobs is None or not bundle:
        raise SharedSetError(
            f"advisory set {meta.get('id')} is not in this data folder ({folder}) and was not published to the"
            " blob store; run `hallmark db update` on this replica (or share [storage] between replicas)"
        )
    log.info("fetching advisory set %s (%s) from the blob store", meta.get("id"), bundle)
    fetch_folder(blobs, str(bundle), folder)
    _prune_local(root, keep=folder.name)
    return folder


def _prune_local(root: Path, keep: str) -> None:
    """Keep the fetched set and the newest other one (a reader may still hold it)."""
    others = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith(".") and e.name != keep)
    for name in others[:-1]:
        shutil.rmtree(root / name, ignore_errors=True)


def _marker(config: Config) -> Path:
    """Which bundle the rules folder holds (beside it: the rule loader reads every file inside)."""
    return config.rules_path.with_name(config.rules_path.name + ".bundle")


def publish_rules(config: Config, blobs: BlobStore) -> str | None:
    """Publish the installed rule bundle; returns its manifest digest (None when there are no rules)."""
    if not config.rules_path.is_dir():
        return None
    digest = publish_folder(blobs, config.rules_path)
    _marker(config).write_text(digest)
    return digest


@contextlib.contextmanager
def _rules_lock(config: Config) -> Iterator[None]:
    lock_path = config.rules_path.with_name(config.rules_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_rules(config: Config, blobs: BlobStore, meta: dict[str, Any] | None) -> None:
    """Bring the rules folder to the active set's rule bundle when another replica installed it."""
    want = ((meta or {}).get("sources") or {}).get("rules_bundle")
    marker = _marker(config)
    if not want or (marker.is_file() and marker.read_text() == want):
        return
    with _rules_lock(config):
        if marker.is_file() and marker.read_text() == want:
            return
        dest = config.rules_path
        staging = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.fetch")
        log.info("fetching rule bundle %s from the blob store", want)
        fetch_folder(blobs, str(want), staging)
        replace_folder(staging, dest)
        marker.write_text(str(want))


def prune_shared(blobs: BlobStore, bundles: Iterable[str]) -> int:
    """Remove shared files no listed bundle uses (the active and previous set, the rule bundle)."""
    keep: set[str] = set()
    shared = blobs.shared()
    removed = 0
    try:
        for bundle in bundles:
            keep.add(bundle)
            with contextlib.suppress(SharedSetError):  # a bundle gone is no reason to keep its files
                keep.update(str(e["digest"]) for e in _read_manifest(blobs, bundle))
        for digest in list(shared.iterate()):
            if digest not in keep:
                shared.delete(digest)
                removed += 1
    except StorageUnavailable as exc:  # cleanup is retried at the next update
        log.warning("pruning shared advisory files: %s", exc)
    return removed


def replace_folder(staging: Path, dest: Path) -> None:
    """Put a complete ``staging`` folder in place of ``dest`` (two renames: readers never see half)."""
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging, dest)
    shutil.rmtree(old, ignore_errors=True)

"""Backup and restore of the embedded default: SQLite database + blob folder + data folder.

A backup is a folder::

    backup.json          what is in it: format, time, version, and for every file its size and sha256;
                         written last, so a folder without it is an unfinished backup
    hallmark.db          a consistent snapshot made with SQLite's online backup API in one read
                         transaction (safe while ``hallmark serve`` writes: WAL lets writers go on)
    blobs/<algo>/<hex>   every blob the snapshot references (the ``blobs`` table), copied and
                         hashed on the way, so a backup never holds a blob that does not match
    store/...            other files of the blob folder (the shared advisory and rule files), not
                         partial uploads or garbage collection's trash
    data/...             the data folder's own files: image-signing keys, the database record, rules,
                         configuration (not ``cache/``); the token-signing, upload-session, mirror and
                         OIDC keys live in the database (``instance_secrets``), so the snapshot has them

Blobs are copied, not hard-linked, by default: a hard link shares the disk (and any corruption of
it) with the live folder, which a backup must not. ``link=True`` hard-links where the backup is on
the same filesystem (a quick snapshot before an upgrade), still verifying every digest.

Order matters: the database snapshot comes first, then the blobs it names. A blob pushed after the
snapshot is not in it (and not needed by it). A blob the snapshot names can only disappear if
garbage collection removes it meanwhile: the backup then fails with that digest, and is simply
run again (or run with the scheduler's GC paused). PostgreSQL and S3 deployments use their own
tools: see docs/operations.md.

Restore checks every file against ``backup.json`` before anything is written, writes blobs through
the blob store (which verifies each digest again), and refuses a data folder that is not empty
unless forced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hallmark import __version__
from hallmark.config import Config
from hallmark.digest import parse_digest
from hallmark.metadata.datafolder import RECORD, write_record
from hallmark.storage import FilesystemBlobStore

FORMAT = 1
MANIFEST = "backup.json"
DATABASE = "hallmark.db"
_CHUNK = 1 << 20
# Inside the blob folder: content (backed up from the database's list), and what is never backed up.
_BLOB_DIRS = {"blobs", "uploads", "upload-states", "trash"}


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why (nothing half-done is left as valid)."""


@dataclass
class Summary:
    blobs: int = 0
    blob_bytes: int = 0
    files: int = 0
    linked: int = 0
    database_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def sqlite_path(config: Config) -> Path:
    """The SQLite file of the embedded default; a clear refusal for PostgreSQL or S3."""
    url = config.database_url
    if not url.startswith("sqlite:///"):
        raise BackupError(
            "hallmark backup/restore handle the embedded default (SQLite); for PostgreSQL use pg_dump/pg_restore "
            "as described in docs/operations.md"
        )
    if config.storage.driver != "filesystem":
        raise BackupError(
            f"hallmark backup/restore handle the filesystem blob driver, not {config.storage.driver!r}; "
            "see docs/operations.md for object storage"
        )
    return Path(url.removeprefix("sqlite:///")).expanduser().resolve()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashing(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (mode kept), returning the sha256 and size of what was written."""
    h = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)
    return h.hexdigest(), size


def _files_under(root: Path, skip: Callable[[Path], bool]) -> Iterator[Path]:
    """Regular files under ``root`` (sorted, symlinks not followed), minus what ``skip`` says."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not skip(here / d))
        for name in sorted(filenames):
            path = here / name
            if not skip(path) and path.is_file() and not path.is_symlink():
                yield path


def _snapshot(db_path: Path, target: Path) -> None:
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}: nothing to back up")
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        with dst:
            # One step, one read transaction: under WAL the server keeps writing meanwhile, and the copy
            # is the database as of that transaction (a stepwise copy restarts whenever another
            # connection writes, which the audit flush does twice a second).
            src.backup(dst)
        check = dst.execute("PRAGMA integrity_check").fetchone()
        if not check or check[0] != "ok":
            raise BackupError(f"the database snapshot failed its integrity check: {check}")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        src.close()
        dst.close()


def referenced_blobs(db_path: Path) -> list[tuple[str, int]]:
    """(digest, size) of every blob the database references, from a snapshot."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [(str(d), int(s)) for d, s in con.execute("SELECT digest, size FROM blobs ORDER BY digest")]
    finally:
        con.close()


def _blob_rel(digest: str) -> str:
    algo, hexpart = parse_digest(digest)
    return f"blobs/{algo}/{hexpart}"


def _empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def backup(config: Config, dest: Path, link: bool = False, progress: Callable[[str], None] | None = None) -> Summary:
    """Write a backup of the data folder described by ``config`` into ``dest`` (new or empty)."""
    say = progress or (lambda _msg: None)
    db_path = sqlite_path(config)
    data_path = config.data_path
    blob_root = config.blob_path
    dest = dest.expanduser().resolve()
    if not _empty(dest):
        raise BackupError(f"{dest} is not empty: back up into a new folder")
    if dest == data_path or data_path in dest.parents or dest == blob_root or blob_root in dest.parents:
        raise BackupError(f"{dest} is inside the data folder or blob folder it would back up")
    dest.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    files: dict[str, dict[str, Any]] = {}

    say("database snapshot")
    _snapshot(db_path, dest / DATABASE)
    summary.database_bytes = (dest / DATABASE).stat().st_size
    files[DATABASE] = {"size": summary.database_bytes, "sha256": _sha256_file(dest / DATABASE)}

    store = FilesystemBlobStore(blob_root)
    blobs = referenced_blobs(dest / DATABASE)
    say(f"{len(blobs)} blob(s)")
    missing = []
    for digest, size in blobs:
        src = store.blob_path(digest)
        target = dest / _blob_rel(digest)
        if not src.is_file():
            missing.append(digest)
            continue
        algo, hexpart = parse_digest(digest)
        if link and _try_link(src, target):
            summary.linked += 1
            got = _sha256_file(target) if algo == "sha256" else hexpart
            got_size = target.stat().st_size
        else:
            got, got_size = _copy_hashing(src, target)
        if (algo == "sha256" and got != hexpart) or got_size != size:
            raise BackupError(
                f"blob {digest} in {blob_root} does not match its digest or size: the blob folder is damaged"
            )
        summary.blobs += 1
        summary.blob_bytes += size
    if missing:
        raise BackupError(
            f"{len(missing)} blob(s) named by the database snapshot are gone from {blob_root} (garbage collection "
            f"ran meanwhile?), e.g. {missing[0]}: run the backup again"
        )

    def skip_store(path: Path) -> bool:
        return path.parent == blob_root and path.name in _BLOB_DIRS

    for path in _files_under(blob_root, skip_store):
        rel = "store/" + path.relative_to(blob_root).as_posix()
        digest, size = _copy_hashing(path, dest / rel)
        files[rel] = {"size": size, "sha256": digest}

    db_names = {db_path.name, db_path.name + "-wal", db_path.name + "-shm", db_path.name + "-journal"}

    def skip_data(path: Path) -> bool:
        if path == blob_root or path == dest or path == data_path / "cache":  # cache/: per machine, rebuilt
            return True
        return path.parent == db_path.parent and (path.name in db_names or path.name.endswith(".writelock"))

    for path in _files_under(data_path, skip_data):
        rel = "data/" + path.relative_to(data_path).as_posix()
        digest, size = _copy_hashing(path, dest / rel)
        files[rel] = {"size": size, "sha256": digest}
        summary.files += 1

    manifest = {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "hallmark_version": __version__,
        "blobs": [{"digest": d, "size": s} for d, s in blobs],
        "files": files,
        "blob_copies": "hard links" if summary.linked else "copies",
    }
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(tmp, dest / MANIFEST)  # last: a folder without it is not a backup
    return summary


def _try_link(src: Path, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, target)
    except OSError:  # another filesystem, or links not allowed: copy instead
        return False
    return True


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a Hallmark backup (no {MANIFEST}; an unfinished backup has none)") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BackupError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown backup format {doc.get('format') if isinstance(doc, dict) else doc!r}")
    return doc


def verify(src: Path) -> dict[str, Any]:
    """Check every file and blob of a backup against its manifest; returns the manifest."""
    doc = read_manifest(src)
    for rel, meta in doc["files"].items():
        path = src / rel
        if not path.is_file() or path.stat().st_size != meta["size"] or _sha256_file(path) != meta["sha256"]:
            raise BackupError(f"{path} is missing or damaged (size or sha256 differ from {MANIFEST})")
    for blob in doc["blobs"]:
        path = src / _blob_rel(blob["digest"])
        algo, hexpart = parse_digest(blob["digest"])
        if not path.is_file() or path.stat().st_size != blob["size"]:
            raise BackupError(f"blob {blob['digest']} is missing from the backup or has the wrong size")
        if algo == "sha256" and _sha256_file(path) != hexpart:
            raise BackupError(f"blob {blob['digest']} in the backup does not match its digest")
    return doc


def restore(config: Config, src: Path, force: bool = False, progress: Callable[[str], None] | None = None) -> Summary:
    """Restore a backup into the (empty, unless ``force``) data folder described by ``config``."""
    say = progress or (lambda _msg: None)
    src = src.expanduser().resolve()
    db_path = sqlite_path(config)
    data_path = config.data_path
    blob_root = config.blob_path
    say("verifying the backup")
    doc = verify(src)  # before anything is written
    if not _empty(data_path) or not _empty(blob_root):
        if not force:
            raise BackupError(f"{data_path} is not empty: restore into a new folder, or pass --force to replace it")
        say(f"--force: clearing {data_path}")
        _clear(data_path)
        if blob_root != data_path and data_path not in blob_root.parents:
            _clear(blob_root)
    data_path.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for rel, meta in doc["files"].items():
        if rel.startswith("data/"):
            target = data_path / rel.removeprefix("data/")
            summary.files += 1
        elif rel.startswith("store/"):
            target = blob_root / rel.removeprefix("store/")
        else:
            continue
        digest, _ = _copy_hashing(src / rel, target)
        if digest != meta["sha256"]:
            raise BackupError(f"{src / rel} changed while being restored")
    # The record names the database this folder belongs to: the one configured here, not the source's.
    (data_path / RECORD).unlink(missing_ok=True)
    write_record(data_path, config.database_url)
    store = FilesystemBlobStore(blob_root)
    say(f"{len(doc['blobs'])} blob(s)")
    for blob in doc["blobs"]:
        store.put(_chunks(src / _blob_rel(blob["digest"])), expected_digest=blob["digest"])  # verifies again
        summary.blobs += 1
        summary.blob_bytes += blob["size"]
    say("database")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".restore")
    digest, summary.database_bytes = _copy_hashing(src / DATABASE, tmp)
    if digest != doc["files"][DATABASE]["sha256"]:
        tmp.unlink()
        raise BackupError(f"{src / DATABASE} changed while being restored")
    os.replace(tmp, db_path)  # last: the folder is only usable once its blobs are all there
    return summary


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _clear(folder: Path) -> None:
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

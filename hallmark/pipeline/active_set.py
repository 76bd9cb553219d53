"""Which advisory set is active, and opening it for one scan, without importing SQLAlchemy.

``hallmark scan`` needs one row of ``advisory_sets`` before it reads a layer. Importing SQLAlchemy
and the metadata store for that costs ~0.25 s, a sixth of a first scan's 1.5 s budget (issue
18), so on the embedded default (SQLite) the row is read with the standard library's ``sqlite3``,
opened read-write but never created (``mode=rw``: a missing file is an error, not a new empty
database). Any other database URL goes through :class:`hallmark.pipeline.store.PipelineStore`,
whose ``active_advisory_set`` shares :func:`set_meta` with this module, so both return the same
mapping.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from hallmark.advisories.compiled import open_or_compile
from hallmark.pipeline import shared_sets

if TYPE_CHECKING:
    from hallmark.advisories.index import AdvisorySource
    from hallmark.config import Config
    from hallmark.storage.base import BlobStore

ACTIVE_SQL = "SELECT id, blob_digest, sources, created_at FROM advisory_sets WHERE active ORDER BY id DESC LIMIT 1"


def set_meta(set_id: int, blob_digest: str, sources: str | bytes, created_at: Any) -> dict[str, Any]:
    """An ``advisory_sets`` row as the mapping the matcher, the scan and the API read."""
    return {"id": set_id, "blob_digest": blob_digest, "sources": orjson.loads(sources), "created_at": created_at}


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None: another database, or SQLite in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def read_active_set(url: str) -> dict[str, Any] | None:
    """The active set's metadata from the database at ``url`` (None: no set imported yet).

    Raises what the database driver raises (an unreadable file, a schema without the table)."""
    path = sqlite_path(url)
    if path is None:
        from hallmark.metadata.db import make_engine
        from hallmark.metadata.store import MetadataStore
        from hallmark.pipeline.store import PipelineStore

        return PipelineStore(MetadataStore(make_engine(url))).active_advisory_set()
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True, timeout=30)
    try:
        row = conn.execute(ACTIVE_SQL).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    set_id, blob_digest, sources, created_at = row
    # SQLAlchemy's DateTime on SQLite: "YYYY-MM-DD HH:MM:SS.ffffff", read back as a naive datetime
    when = dt.datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
    return set_meta(set_id, blob_digest, sources, when)


def open_active(config: Config, meta: dict[str, Any], blobs: BlobStore | None = None) -> AdvisorySource:
    """The active set for one scan: its compiled index, read per package (a set imported before
    sets were compiled is compiled on this first use); fetched from the blob store first when
    another replica imported it."""
    return open_or_compile(shared_sets.ensure_set(config, blobs, meta))

"""The SQLite fast path of :class:`~hallmark.metadata.store.MetadataStore`: raw sqlite3, fixed SQL.

SQLAlchemy Core spends ~0.2 ms building and caching a statement per call, more than
SQLite takes to answer; the hot registry paths (manifest by tag, blob stat, upload
sessions, blob links) run fixed SQL text on a per-thread plain ``sqlite3`` connection
instead (manifest GET went from ~620 to ~5,000 requests/s per process). Everything else,
and every path on PostgreSQL, goes through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator

_COLS = "m.digest, m.media_type, m.content, m.artifact_type, m.subject_digest"
BY_TAG_SQL = (
    f"SELECT {_COLS} FROM tags t JOIN repositories r ON r.id = t.repo_id "
    "JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest WHERE r.name = ? AND t.name = ?"
)
BY_DIGEST_SQL = (
    f"SELECT {_COLS} FROM manifests m JOIN repositories r ON r.id = m.repo_id WHERE r.name = ? AND m.digest = ?"
)
BLOB_SIZE_SQL = (
    "SELECT b.size FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id "
    "JOIN blobs b ON b.digest = rb.digest WHERE r.name = ? AND rb.digest = ?"
)
ADD_REPO_SQL = "INSERT OR IGNORE INTO repositories (name, immutable_tags, created_at) VALUES (?, 0, ?)"
REPO_ID_SQL = "SELECT id FROM repositories WHERE name = ?"
ADD_BLOB_SQL = "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)"
LINK_BLOB_SQL = "INSERT OR IGNORE INTO repo_blobs (repo_id, digest, created_at) VALUES (?, ?, ?)"
GET_UPLOAD_SQL = "SELECT id, repo_name, created_at, updated_at, closed FROM uploads WHERE id = ?"
CLOSE_UPLOAD_SQL = (
    "INSERT INTO uploads (id, repo_name, created_at, updated_at, closed) VALUES (?, ?, ?, ?, 1) "
    "ON CONFLICT (id) DO UPDATE SET closed = 1, updated_at = excluded.updated_at"
)
KEEP_UPLOAD_SQL = (
    "INSERT INTO uploads (id, repo_name, created_at, updated_at, closed, principal) VALUES (?, ?, ?, ?, 0, ?) "
    "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at"
)
OPEN_UPLOADS_SQL = "SELECT count(*) FROM uploads WHERE principal = ? AND closed = 0 AND updated_at >= ?"


def sqlite_ts(value: dt.datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime type stores (UTC, no offset), so both paths agree."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_sqlite_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


class SqliteWriteLock:
    """One SQLite writer at a time, across threads and across ``--workers`` processes.

    SQLite's own busy handler sleeps and retries (1, 2, 5... ms) when another
    connection holds the write lock; queueing on a thread lock plus an ``flock`` on
    a side file wakes the next writer as soon as the previous one commits.
    """

    def __init__(self, database: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._path = f"{database}.writelock" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._path is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked worker needs its own open file
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class FastSqlite:
    """Per-thread raw connections to one SQLite file, writing under the shared write lock."""

    def __init__(self, path: str, write_lock: SqliteWriteLock) -> None:
        self._path = path
        self._write_lock = write_lock
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        with self._write_lock:
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

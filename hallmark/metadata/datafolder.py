"""The data folder records which database it belongs to (``<data_dir>/database.json``).

Blobs, keys and rules live in the data folder, metadata in the database; the two only make sense
together. A command run without ``HALLMARK_DATABASE_URL`` next to a PostgreSQL-backed folder must not
create an empty SQLite database and work on that (``hallmark gc`` would then see every blob as
unreferenced). So the first start writes this record, and configuration loading uses it: the recorded
URL when it is complete, a clear refusal when it is not (passwords are never written here), and a
refusal when the configured URL names another database.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hallmark.config import ConfigError

RECORD = "database.json"
SQLITE_FILE = "hallmark.db"
# Written by the first Hallmark.open; a folder that has it but neither a record nor hallmark.db was
# created before records existed, by a server on another database.
_OPENED_MARK = Path("registry") / "upload-session-key"


@dataclass(frozen=True)
class DatabaseRecord:
    """What a data folder says about its database (never a password)."""

    dialect: str  # sqlite | postgresql | ...
    url: str  # without password; for SQLite inside the folder: sqlite:///<name relative to the folder>
    host: str  # "" for SQLite
    database: str  # database name, or the SQLite file
    password: bool  # the URL the folder was started with carried a password (not recorded)

    def resolved_url(self, data_path: Path) -> str:
        if self.dialect == "sqlite" and not Path(self.database).is_absolute():
            return f"sqlite:///{data_path / self.database}"
        return self.url

    def where(self) -> str:
        return f"{self.host}/{self.database}" if self.host else self.database


def describe(url: str, data_path: Path) -> DatabaseRecord:
    """The record for ``url`` (a SQLite file inside the data folder is kept relative, so the folder can move)."""
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    dialect = u.get_backend_name()
    if dialect == "sqlite":
        path = Path(u.database or ":memory:")
        if u.database and u.database != ":memory:":
            path = path.expanduser().resolve()
            if path.parent == data_path:
                path = Path(path.name)
        shown = f"sqlite:///{path}"
        return DatabaseRecord("sqlite", shown, "", str(path), False)
    host = u.host or ""
    if u.port:
        host = f"{host}:{u.port}"
    clean = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    shown = clean.render_as_string(hide_password=False)
    return DatabaseRecord(dialect, shown, host, u.database or "", u.password is not None)


def read_record(data_path: Path) -> DatabaseRecord | None:
    path = data_path / RECORD
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the data folder's database record: {exc}") from exc
    try:
        return DatabaseRecord(
            str(doc["dialect"]), str(doc["url"]), str(doc["host"]), str(doc["database"]), bool(doc["password"])
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a database record (expected dialect, url, host, database, password)") from exc


def write_record(data_path: Path, url: str) -> DatabaseRecord:
    """Record ``url`` unless the folder already has a record (atomic; the folder must exist)."""
    existing = read_record(data_path)
    if existing is not None:
        return existing
    rec = describe(url, data_path)
    doc: dict[str, Any] = {
        "dialect": rec.dialect,
        "url": rec.url,
        "host": rec.host,
        "database": rec.database,
        "password": rec.password,
        "note": "Written at first start: the database this data folder belongs to. Never holds a password.",
    }
    fd, tmp = tempfile.mkstemp(prefix=".database-", dir=data_path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, data_path / RECORD)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rec


def _same(a: DatabaseRecord, b: DatabaseRecord) -> bool:
    return (a.dialect, a.host, a.database) == (b.dialect, b.host, b.database)


def resolve_url(data_path: Path, configured: str | None) -> str | None:
    """The database URL to use for this folder (None: the default SQLite file), or ConfigError."""
    rec = read_record(data_path)
    if rec is None:
        if configured is None and (data_path / _OPENED_MARK).exists() and not (data_path / SQLITE_FILE).exists():
            raise ConfigError(
                f"data folder {data_path} was used by a server on another database (it has no {SQLITE_FILE}); "
                "set HALLMARK_DATABASE_URL"
            )
        return configured
    if configured is not None:
        wanted = describe(configured, data_path)
        if not _same(wanted, rec):
            raise ConfigError(
                f"data folder {data_path} belongs to the {rec.dialect} database {rec.where()}, "
                f"not to {wanted.dialect} {wanted.where()} (see {data_path / RECORD}; remove it if the database moved)"
            )
        return configured
    if rec.password:
        name = "PostgreSQL" if rec.dialect == "postgresql" else rec.dialect
        raise ConfigError(f"this data folder belongs to a {name} database at {rec.where()}; set HALLMARK_DATABASE_URL")
    return rec.resolved_url(data_path)

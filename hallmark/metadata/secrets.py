"""Instance secrets in the database (table ``instance_secrets``), so replicas need no shared disk.

Keys that every ``hallmark serve`` and ``hallmark worker`` of one installation must hold alike
(the registry token-signing key, the upload-session HMAC key, the mirror password key, the OIDC
flow-cookie key) used to be files in each data folder: a second replica with its own folder made
its own keys and refused the first one's tokens and upload sessions. Now the first process to
need a key inserts it; everyone else, concurrently or later, reads that same row back.

An installation from before keeps its keys: when no row exists yet and the old file does, the
file's value is imported (tokens issued and passwords sealed before keep working); the file is
not read again after that and may be deleted. Values are never logged nor returned by any API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import instance_secrets

log = logging.getLogger(__name__)

# The names in use (one row each).
TOKEN_SIGNING_KEY = "token-signing-key"  # noqa: S105 (a row name, not a secret)
UPLOAD_SESSION_KEY = "upload-session-key"
MIRROR_KEY = "mirror-key"
OIDC_FLOW_KEY = "oidc-flow-key"


def _engine(meta_or_engine: MetadataStore | Engine) -> Engine:
    return meta_or_engine.engine if isinstance(meta_or_engine, MetadataStore) else meta_or_engine


def read(meta_or_engine: MetadataStore | Engine, name: str) -> str | None:
    """The stored value, or None when no process created it yet."""
    with _engine(meta_or_engine).connect() as conn:
        value = conn.execute(select(instance_secrets.c.value).where(instance_secrets.c.name == name)).scalar()
    return None if value is None else str(value)


def _insert_if_absent(conn: Connection, name: str, value: str) -> None:
    values: dict[str, Any] = {"name": name, "value": value, "created_at": utcnow()}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(instance_secrets).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(instance_secrets).values(**values).on_conflict_do_nothing())
    else:
        try:
            with conn.begin_nested():
                conn.execute(instance_secrets.insert().values(**values))
        except IntegrityError:
            pass  # another process was first: its value wins


def get_or_create(
    meta_or_engine: MetadataStore | Engine,
    name: str,
    factory: Callable[[], str],
    legacy_file: Path | None = None,
) -> str:
    """The value named ``name``; the first caller anywhere stores ``factory()`` (or ``legacy_file``'s
    content, for installations from before) and every caller, on any replica, gets that one value.

    Insert-if-absent, then read back: concurrent first starts agree without a lock.
    """
    found = read(meta_or_engine, name)
    if found is not None:
        return found
    value = None
    if legacy_file is not None and legacy_file.is_file():
        value = legacy_file.read_text(encoding="utf-8").strip() or None
        if value is not None:
            log.info("imported the %s from %s into the database; the file is no longer used", name, legacy_file)
    if value is None:
        value = factory()
    if isinstance(meta_or_engine, MetadataStore):
        with meta_or_engine.transaction() as conn:
            _insert_if_absent(conn, name, value)
    else:
        with meta_or_engine.begin() as conn:
            _insert_if_absent(conn, name, value)
    stored = read(meta_or_engine, name)
    if stored is None:  # only if someone deleted the row in between
        raise RuntimeError(f"instance secret {name!r} vanished while it was created")
    return stored


def replace(meta_or_engine: MetadataStore | Engine, name: str, value: str) -> bool:
    """Overwrite an existing value (key rotation by an operator or a test); False if there was none."""
    stmt = update(instance_secrets).where(instance_secrets.c.name == name).values(value=value, created_at=utcnow())
    if isinstance(meta_or_engine, MetadataStore):
        with meta_or_engine.transaction() as conn:
            return conn.execute(stmt).rowcount > 0
    with meta_or_engine.begin() as conn:
        return conn.execute(stmt).rowcount > 0

"""Engine creation and schema migration (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# A database that does not answer fails the start in this time instead of the OS's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database URL is unusable or the database cannot be reached; the one-line message says which
    database (never its password) and why, as the driver put it."""


def shown_url(url: str | URL) -> str:
    """The URL for messages: the password masked."""
    try:
        return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", str(url))


def _one_line(text: str) -> str:
    """Driver messages span lines (psycopg adds hints on their own line); a start error is one line."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def make_engine(url: str, pool_size: int = 8) -> Engine:
    """An engine for ``url``; raises DatabaseUnavailable for a URL that cannot name a usable database."""
    try:
        u = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise DatabaseUnavailable(f"malformed database URL {shown_url(url)!r}: {_one_line(str(exc))}") from exc
    try:
        return _make_engine(u, pool_size)
    except (sa_exc.ArgumentError, ImportError) as exc:  # NoSuchModuleError: an unknown dialect or driver
        raise DatabaseUnavailable(
            f"unsupported database URL {shown_url(u)}: {_one_line(str(exc))} (use sqlite:/// or postgresql://)"
        ) from exc
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise DatabaseUnavailable(f"cannot use the database {shown_url(u)}: {exc.strerror or exc}") from exc


def _make_engine(u: URL, pool_size: int) -> Engine:
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if u.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in u.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(u, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, connect_args=connect_args)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe with several replicas on PostgreSQL).

    Alembic logs its setup at INFO on every run; those lines go to debug, and one INFO line says which
    migrations run, only when some do. Raises DatabaseUnavailable when the database cannot be reached.
    """
    with _alembic_at_debug():  # importing alembic logs its plugins at INFO
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn, _alembic_at_debug():
            if conn.dialect.name == "postgresql":
                # Serialise concurrent replicas starting at once.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263541)")
            current = set(MigrationContext.configure(conn).get_current_heads())
            script = ScriptDirectory.from_config(cfg)
            heads = set(script.get_heads())
            if current == heads:
                log.debug("database schema is current (%s)", ", ".join(sorted(heads)))
                return
            pending = [r.revision for r in script.iterate_revisions("heads", tuple(current) or "base")]
            log.info(
                "migrating the database schema from %s to %s (%d migration%s)",
                ", ".join(sorted(current)) or "empty",
                ", ".join(sorted(heads)),
                len(pending),
                "" if len(pending) == 1 else "s",
            )
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database {shown_url(engine.url)}: {_one_line(str(exc.orig or exc))}"
        ) from exc


@contextlib.contextmanager
def _alembic_at_debug() -> Iterator[None]:
    """Alembic's INFO chatter (plugins, context, each revision) only when debug logging is on."""
    alembic_log = logging.getLogger("alembic")
    before = alembic_log.level
    if not log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(before)

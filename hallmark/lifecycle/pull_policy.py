"""Whether a manifest may be pulled, from its catalog stage: the one decision the registry applies on
every manifest GET/HEAD and that admission control reuses.

- ``retired``: refused (the registry answers 403 ``DENIED`` with :attr:`PullDecision.message`),
  unless the repository's namespace (or the repository) sets ``retired_pull = warn``, or the
  server default (``[lifecycle] retired_pull``) is ``warn``: then served with a warning.
- ``deprecated``: always served, always with a warning.
- anything else (``staging``, ``approved``, no catalog row): served, no warning.

Messages name the replacement recorded at deprecation or retirement, so the client's error or
warning says what to pull instead. The manifest GET is the registry's hot path: the common case
is one primary-key read, raw SQL on both databases (:class:`PullPolicy`); settings are read only
for retired images.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from hallmark.catalog.tables import catalog_entries
from hallmark.lifecycle.tables import lifecycle_settings
from hallmark.metadata.store import MetadataStore, utcnow

RETIRED_PULL = ("deny", "warn")
_STAGE_SQL = "SELECT stage, replacement, stage_reason FROM catalog_entries WHERE repo_name = ? AND digest = ?"
_STAGE_SQL_PG = _STAGE_SQL.replace("?", "%s")
_REASON_MAX = 300  # of the reason quoted in a message or warning header


@dataclass(frozen=True)
class PullDecision:
    """``allowed`` False: refuse with ``message``. ``warning``: serve, with this warning text."""

    allowed: bool
    stage: str
    warning: str | None = None
    message: str | None = None
    replacement: str | None = None
    reason: str | None = None


SERVE = PullDecision(True, "staging")


def decide(meta: MetadataStore, repo: str, digest: str, retired_pull: str = "deny") -> PullDecision:
    """The pull decision for manifest ``digest`` of ``repo`` (the digest the reference resolved to).

    ``retired_pull`` is the server default (``[lifecycle] retired_pull``), used when neither the
    repository nor its namespace has its own setting.
    """
    conn = meta.sqlite_conn()
    if conn is not None:
        row = conn.execute(_STAGE_SQL, (repo, digest)).fetchone()
    else:
        q = select(catalog_entries.c.stage, catalog_entries.c.replacement, catalog_entries.c.stage_reason).where(
            catalog_entries.c.repo_name == repo, catalog_entries.c.digest == digest
        )
        with meta.engine.connect() as c:
            row = c.execute(q).first()
    return _decision(meta, repo, digest, row, retired_pull)


class PullPolicy:
    """:func:`decide` bound to a store and the server default: the registry's ``pull_policy`` hook.

    Same answer, cheaper read on PostgreSQL: one autocommit connection per process (~40 us a
    read instead of ~400 us through the pool, whose pre-ping and reset cost two more round trips),
    so the manifest GET stays close to its speed without a cache that could serve a retired image
    after the change. SQLite already reads through the raw fast-path connection.
    """

    def __init__(self, meta: MetadataStore, retired_pull: str = "deny") -> None:
        self.meta = meta
        self.retired_pull = retired_pull
        self._pg = (
            _PgReader(meta.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
            if meta.dialect == "postgresql"
            else None
        )

    def __call__(self, repo: str, digest: str) -> PullDecision:
        if self._pg is None:
            return decide(self.meta, repo, digest, self.retired_pull)
        return _decision(self.meta, repo, digest, self._pg.row(repo, digest), self.retired_pull)


class _PgReader:
    """One autocommit psycopg connection for this process, serialised by a lock (a read is far
    shorter than the rest of a manifest GET); reconnects once when the server went away."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self._inherited: list[Any] = []

    def row(self, repo: str, digest: str) -> tuple[Any, ...] | None:
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                if self._conn is not None and self._pid != os.getpid():
                    # A forked worker must not use (or close: that would end it) its parent's session.
                    self._inherited.append(self._conn)
                    self._conn = None
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._conninfo, autocommit=True)
                    self._pid = os.getpid()
                try:
                    row = self._conn.execute(_STAGE_SQL_PG, (repo, digest)).fetchone()
                    return tuple(row) if row is not None else None
                except psycopg.OperationalError:
                    self._conn = None
                    if attempt == 2:
                        raise
        return None


def _decision(meta: MetadataStore, repo: str, digest: str, row: Any, retired_pull: str) -> PullDecision:
    """The decision from the image's ``(stage, replacement, stage_reason)`` row (None: no row)."""
    if row is None:
        return SERVE
    stage, replacement, reason = str(row[0]), row[1], row[2]
    if stage not in ("deprecated", "retired"):
        return PullDecision(True, stage)
    text = _describe(repo, digest, stage, replacement, reason)
    if stage == "deprecated":
        return PullDecision(True, stage, warning=text, replacement=replacement, reason=reason)
    mode, scope = retired_pull_for(meta, repo, retired_pull)
    if mode == "warn":
        where = f"{scope[0]} {scope[1]}" if scope else "this registry"
        warning = f"{text} (served because {where} allows pulls of retired images)"
        return PullDecision(True, stage, warning=warning, replacement=replacement, reason=reason)
    return PullDecision(False, stage, message=text, replacement=replacement, reason=reason)


def _describe(repo: str, digest: str, stage: str, replacement: str | None, reason: str | None) -> str:
    text = f"{repo}@{digest} is {stage}"
    if reason:
        short = reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 3] + "..."
        text += f" ({' '.join(short.split())})"
    return text + (f"; use {replacement} instead" if replacement else "; no replacement was named")


def namespaces_of(repo: str) -> list[str]:
    """Every namespace that contains ``repo``, innermost first (``a/b/c`` -> ``a/b``, ``a``)."""
    parts = repo.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def retired_pull_for(meta: MetadataStore, repo: str, default: str) -> tuple[str, tuple[str, str] | None]:
    """``(deny|warn, (scope_kind, scope) that decided or None for the default)`` for ``repo``:
    its own setting wins, then the innermost namespace with one, then ``default``."""
    spaces = namespaces_of(repo)
    t = lifecycle_settings.c
    q = select(t.scope_kind, t.scope, t.retired_pull).where(
        t.retired_pull.is_not(None),
        or_(
            and_(t.scope_kind == "repository", t.scope == repo),
            and_(t.scope_kind == "namespace", t.scope.in_(spaces)),
        ),
    )
    with meta.engine.connect() as c:
        rows = {(str(r[0]), str(r[1])): str(r[2]) for r in c.execute(q)}
    for key in [("repository", repo)] + [("namespace", ns) for ns in spaces]:
        if key in rows:
            return rows[key], key
    return default, None


def namespace_setting(meta: MetadataStore, namespace: str) -> str | None:
    """The namespace's own ``retired_pull`` (None: it has none and inherits)."""
    t = lifecycle_settings.c
    q = select(t.retired_pull).where(t.scope_kind == "namespace", t.scope == namespace)
    with meta.engine.connect() as c:
        value = c.execute(q).scalar()
    return str(value) if value is not None else None


def set_namespace_setting(meta: MetadataStore, namespace: str, value: str | None) -> str | None:
    """Set (or with None clear) the namespace's ``retired_pull``; returns the previous value.

    Other columns of the namespace's settings row (expiry, retention...) are left as they are.
    """
    if value is not None and value not in RETIRED_PULL:
        raise ValueError(f"retired_pull must be one of {', '.join(RETIRED_PULL)}")
    t = lifecycle_settings.c
    key = and_(t.scope_kind == "namespace", t.scope == namespace)
    for _ in range(2):
        try:
            with meta.transaction() as conn:
                previous = conn.execute(select(t.retired_pull).where(key)).first()
                if previous is not None:
                    conn.execute(update(lifecycle_settings).where(key).values(retired_pull=value, updated_at=utcnow()))
                    return str(previous[0]) if previous[0] is not None else None
                if value is not None:
                    conn.execute(
                        lifecycle_settings.insert().values(
                            scope_kind="namespace", scope=namespace, retired_pull=value, updated_at=utcnow()
                        )
                    )
                return None
        except IntegrityError:  # created concurrently: update it on the next pass
            continue
    raise RuntimeError(f"could not store the lifecycle setting of namespace {namespace}")

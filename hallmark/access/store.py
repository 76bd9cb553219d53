"""All SQL for access control and the audit log; handlers and services call these methods only."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hallmark.access.tables import (
    audit_checkpoints,
    audit_log,
    grants,
    namespaces,
    principals,
    repo_settings,
    retired_principals,
    team_members,
    teams,
    tokens,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(ts: dt.datetime | None) -> dt.datetime | None:
    """SQLite drops the zone: read timestamps back as UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=dt.UTC)
    return ts


class Conflict(Exception):
    """The name is taken (unique constraint)."""


class NotFound(Exception):
    """The named object does not exist."""


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    kind: str  # user | robot
    password_hash: str | None
    disabled: bool
    description: str | None = None


@dataclass(frozen=True)
class Grant:
    id: int
    subject_kind: str
    subject: str
    scope_kind: str
    scope: str
    role: str


@dataclass(frozen=True)
class TokenRow:
    id: str
    principal: Principal
    name: str
    secret_sha256: str
    scopes: str | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: dt.datetime
    actor: str
    action: str
    repo: str | None
    digest: str | None
    result: str
    client_addr: str | None
    detail: str | None
    prev_hash: str
    hash: str


_P_COLS = (
    principals.c.id,
    principals.c.name,
    principals.c.kind,
    principals.c.password_hash,
    principals.c.disabled,
    principals.c.description,
)


def _principal(row: Sequence[Any]) -> Principal:
    return Principal(int(row[0]), row[1], row[2], row[3], bool(row[4]), row[5])


class AccessStore:
    def __init__(self, engine: Engine, write_lock: threading.Lock | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        mark = "?" if self.dialect == "sqlite" else "%s"
        # Id and name together: a credential is bound to one principal, never to whoever holds its id later.
        self._SQL_PRINCIPAL = f"SELECT disabled FROM access_principals WHERE id = {mark} AND name = {mark}"
        self._SQL_TOKEN = (
            "SELECT p.disabled, t.revoked_at, t.expires_at FROM access_tokens t "
            "JOIN access_principals p ON p.id = t.principal_id "
            f"WHERE t.id = {mark} AND p.id = {mark} AND p.name = {mark}"
        )
        # Share the registry's SQLite writer lock when given: one writer per process.
        self._write_lock = write_lock if write_lock is not None else threading.Lock()
        if self.dialect != "sqlite":
            self._write_lock = None  # type: ignore[assignment]

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One write transaction (behind the SQLite writer lock), for the other access modules."""
        return self._tx()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    # -- principals ------------------------------------------------------------------
    def create_principal(
        self,
        name: str,
        kind: str,
        password_hash: str | None,
        description: str | None = None,
        only_if_no_users: bool = False,
    ) -> int | None:
        """Insert a user or robot; with ``only_if_no_users`` nothing happens when a user exists (bootstrap)."""
        try:
            with self._tx() as conn:
                if only_if_no_users:
                    n = conn.execute(select(func.count()).select_from(principals).where(principals.c.kind == "user"))
                    if n.scalar_one():
                        return None
                values: dict[str, Any] = {
                    "name": name,
                    "kind": kind,
                    "password_hash": password_hash,
                    "disabled": False,
                    "description": description,
                    "created_at": utcnow(),
                }
                if self.dialect == "sqlite":
                    # SQLite hands out max(rowid)+1, which reuses a deleted highest id: pick past retired ids too.
                    values["id"] = self._next_principal_id(conn)
                res = conn.execute(principals.insert().values(**values))
                pk = res.inserted_primary_key
                assert pk is not None
                return int(pk[0])
        except IntegrityError as exc:
            if only_if_no_users:
                return None
            raise Conflict(name) from exc

    @staticmethod
    def _next_principal_id(conn: Connection) -> int:
        live = conn.execute(select(func.max(principals.c.id))).scalar() or 0
        retired = conn.execute(select(func.max(retired_principals.c.id))).scalar() or 0
        return max(int(live), int(retired)) + 1

    def principal(self, name: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_P_COLS).where(principals.c.name == name)).first()
        return _principal(row) if row else None

    def principal_by_id(self, pid: int) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_P_COLS).where(principals.c.id == pid)).first()
        return _principal(row) if row else None

    def list_principals(self, kind: str | None = None) -> list[Principal]:
        q = select(*_P_COLS).order_by(principals.c.name)
        if kind:
            q = q.where(principals.c.kind == kind)
        with self.engine.connect() as conn:
            return [_principal(r) for r in conn.execute(q)]

    def update_principal(self, name: str, **values: Any) -> None:
        with self._tx() as conn:
            if conn.execute(update(principals).where(principals.c.name == name).values(**values)).rowcount == 0:
                raise NotFound(name)

    def delete_principal(self, name: str) -> None:
        with self._tx() as conn:
            pid = conn.execute(select(principals.c.id).where(principals.c.name == name)).scalar()
            if pid is None:
                raise NotFound(name)
            conn.execute(delete(grants).where(grants.c.subject_kind == "principal", grants.c.subject_id == pid))
            conn.execute(delete(team_members).where(team_members.c.principal_id == pid))
            conn.execute(delete(tokens).where(tokens.c.principal_id == pid))
            kind = conn.execute(select(principals.c.kind).where(principals.c.id == pid)).scalar_one()
            conn.execute(retired_principals.insert().values(id=pid, name=name, kind=kind, retired_at=utcnow()))
            conn.execute(delete(principals).where(principals.c.id == pid))

    # -- namespaces and teams ------------------------------------------------------------
    def create_namespace(self, name: str, description: str | None = None) -> None:
        try:
            with self._tx() as conn:
                conn.execute(namespaces.insert().values(name=name, description=description, created_at=utcnow()))
        except IntegrityError as exc:
            raise Conflict(name) from exc

    def list_namespaces(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(namespaces).order_by(namespaces.c.name)).mappings()
            return [{"name": r["name"], "description": r["description"]} for r in rows]

    def delete_namespace(self, name: str) -> None:
        with self._tx() as conn:
            if conn.execute(delete(namespaces).where(namespaces.c.name == name)).rowcount == 0:
                raise NotFound(name)
            conn.execute(delete(grants).where(grants.c.scope_kind == "namespace", grants.c.scope == name))

    def create_team(self, name: str) -> None:
        try:
            with self._tx() as conn:
                conn.execute(teams.insert().values(name=name, created_at=utcnow()))
        except IntegrityError as exc:
            raise Conflict(name) from exc

    def delete_team(self, name: str) -> None:
        with self._tx() as conn:
            tid = conn.execute(select(teams.c.id).where(teams.c.name == name)).scalar()
            if tid is None:
                raise NotFound(name)
            conn.execute(delete(grants).where(grants.c.subject_kind == "team", grants.c.subject_id == tid))
            conn.execute(delete(team_members).where(team_members.c.team_id == tid))
            conn.execute(delete(teams).where(teams.c.id == tid))

    def list_teams(self) -> list[dict[str, Any]]:
        q = (
            select(teams.c.name, principals.c.name)
            .select_from(teams.outerjoin(team_members).outerjoin(principals))
            .order_by(teams.c.name, principals.c.name)
        )
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for team, member in conn.execute(q):
                out.setdefault(team, [])
                if member:
                    out[team].append(member)
        return [{"name": k, "members": v} for k, v in out.items()]

    def set_membership(self, team: str, member: str, present: bool) -> None:
        with self._tx() as conn:
            tid = conn.execute(select(teams.c.id).where(teams.c.name == team)).scalar()
            pid = conn.execute(select(principals.c.id).where(principals.c.name == member)).scalar()
            if tid is None or pid is None:
                raise NotFound(team if tid is None else member)
            conn.execute(delete(team_members).where(team_members.c.team_id == tid, team_members.c.principal_id == pid))
            if present:
                conn.execute(team_members.insert().values(team_id=tid, principal_id=pid))

    def teams_of(self, pid: int) -> list[str]:
        q = select(teams.c.name).select_from(teams.join(team_members)).where(team_members.c.principal_id == pid)
        with self.engine.connect() as conn:
            return sorted(conn.execute(q).scalars())

    # -- grants ---------------------------------------------------------------------------
    def _subject_id(self, conn: Connection, subject_kind: str, subject: str) -> int:
        table = principals if subject_kind == "principal" else teams
        sid = conn.execute(select(table.c.id).where(table.c.name == subject)).scalar()
        if sid is None:
            raise NotFound(subject)
        return int(sid)

    def add_grant(self, subject_kind: str, subject: str, scope_kind: str, scope: str, role: str) -> bool:
        """Idempotent; True when the grant is new."""
        with self._tx() as conn:
            sid = self._subject_id(conn, subject_kind, subject)
            exists = conn.execute(
                select(grants.c.id).where(
                    grants.c.subject_kind == subject_kind,
                    grants.c.subject_id == sid,
                    grants.c.scope_kind == scope_kind,
                    grants.c.scope == scope,
                    grants.c.role == role,
                )
            ).first()
            if exists:
                return False
            conn.execute(
                grants.insert().values(
                    subject_kind=subject_kind,
                    subject_id=sid,
                    scope_kind=scope_kind,
                    scope=scope,
                    role=role,
                    created_at=utcnow(),
                )
            )
            return True

    def remove_grant(self, subject_kind: str, subject: str, scope_kind: str, scope: str, role: str) -> bool:
        with self._tx() as conn:
            sid = self._subject_id(conn, subject_kind, subject)
            res = conn.execute(
                delete(grants).where(
                    grants.c.subject_kind == subject_kind,
                    grants.c.subject_id == sid,
                    grants.c.scope_kind == scope_kind,
                    grants.c.scope == scope,
                    grants.c.role == role,
                )
            )
            return res.rowcount > 0

    def list_grants(self) -> list[Grant]:
        p = select(
            grants.c.id, grants.c.subject_kind, principals.c.name, grants.c.scope_kind, grants.c.scope, grants.c.role
        ).select_from(
            grants.join(principals, and_(grants.c.subject_kind == "principal", grants.c.subject_id == principals.c.id))
        )
        t = select(
            grants.c.id, grants.c.subject_kind, teams.c.name, grants.c.scope_kind, grants.c.scope, grants.c.role
        ).select_from(grants.join(teams, and_(grants.c.subject_kind == "team", grants.c.subject_id == teams.c.id)))
        with self.engine.connect() as conn:
            rows = list(conn.execute(p)) + list(conn.execute(t))
        return sorted((Grant(*r) for r in rows), key=lambda g: g.id)

    def effective_grants(self, pid: int) -> list[tuple[str, str, str]]:
        """(scope_kind, scope, role) held by the principal directly or through its teams: one statement."""
        team_ids = select(team_members.c.team_id).where(team_members.c.principal_id == pid)
        q = select(grants.c.scope_kind, grants.c.scope, grants.c.role).where(
            or_(
                and_(grants.c.subject_kind == "principal", grants.c.subject_id == pid),
                and_(grants.c.subject_kind == "team", grants.c.subject_id.in_(team_ids)),
            )
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(q)]

    # -- tokens ----------------------------------------------------------------------------
    def create_token(
        self,
        token_id: str,
        principal_id: int,
        name: str,
        secret_sha256: str,
        scopes: str | None,
        expires_at: dt.datetime | None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                tokens.insert().values(
                    id=token_id,
                    principal_id=principal_id,
                    name=name,
                    secret_sha256=secret_sha256,
                    scopes=scopes,
                    expires_at=expires_at,
                    created_at=utcnow(),
                )
            )

    def _token_query(self) -> Any:
        return select(
            tokens.c.id,
            *_P_COLS,
            tokens.c.name,
            tokens.c.secret_sha256,
            tokens.c.scopes,
            tokens.c.expires_at,
            tokens.c.revoked_at,
            tokens.c.created_at,
        ).select_from(tokens.join(principals))

    @staticmethod
    def _token(row: Sequence[Any]) -> TokenRow:
        return TokenRow(
            id=row[0],
            principal=_principal(row[1:7]),
            name=row[7],
            secret_sha256=row[8],
            scopes=row[9],
            expires_at=aware(row[10]),
            revoked_at=aware(row[11]),
            created_at=aware(row[12]) or utcnow(),
        )

    def token(self, token_id: str) -> TokenRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._token_query().where(tokens.c.id == token_id)).first()
        return self._token(row) if row else None

    def list_tokens(self, principal: str | None = None) -> list[TokenRow]:
        q = self._token_query().order_by(tokens.c.created_at)
        if principal is not None:
            q = q.where(principals.c.name == principal)
        with self.engine.connect() as conn:
            return [self._token(r) for r in conn.execute(q)]

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as conn:
            res = conn.execute(
                update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            return res.rowcount > 0

    def prune_tokens(self, before: dt.datetime) -> int:
        """Delete tokens that expired or were revoked before ``before``; how many."""
        with self._tx() as conn:
            res = conn.execute(delete(tokens).where(or_(tokens.c.expires_at < before, tokens.c.revoked_at < before)))
            return int(res.rowcount or 0)

    def session_valid(self, pid: int, name: str, token_id: str | None, now: dt.datetime) -> bool:
        """One indexed read per request: the principal (id and name) is enabled and the token still live.

        Plain SQL on the driver: this runs on every authenticated /v2 request.
        """
        with self.engine.connect() as conn:
            if token_id is None:
                row = conn.exec_driver_sql(self._SQL_PRINCIPAL, (pid, name)).first()
                return row is not None and not row[0]
            row = conn.exec_driver_sql(self._SQL_TOKEN, (token_id, pid, name)).first()
        if row is None or row[0] or row[1] is not None:
            return False
        expires = row[2]
        if isinstance(expires, str):  # SQLite hands back text through the raw driver
            expires = dt.datetime.fromisoformat(expires)
        expires = aware(expires)
        return expires is None or expires > now

    # -- repository visibility ---------------------------------------------------------------
    def set_public(self, repo: str, public: bool) -> None:
        with self._tx() as conn:
            res = conn.execute(update(repo_settings).where(repo_settings.c.repo_name == repo).values(public=public))
            if res.rowcount == 0:
                conn.execute(repo_settings.insert().values(repo_name=repo, public=public))

    def is_public(self, repo: str) -> bool | None:
        with self.engine.connect() as conn:
            v = conn.execute(select(repo_settings.c.public).where(repo_settings.c.repo_name == repo)).scalar()
        return None if v is None else bool(v)

    def visibility(self) -> dict[str, bool]:
        with self.engine.connect() as conn:
            return {r[0]: bool(r[1]) for r in conn.execute(select(repo_settings.c.repo_name, repo_settings.c.public))}

    # -- audit chain ------------------------------------------------------------------------------
    def append_audit(self, entries: Sequence[dict[str, Any]], chain: Any) -> int:
        """Append entries in one transaction; ``chain(prev_hash, seq, entry) -> hash`` links each to the last.

        Other processes append to the same chain: PostgreSQL serialises on an advisory lock, SQLite
        takes its write lock before reading the head; a lost race (unique ``seq``) is retried.
        """
        for attempt in range(20):
            try:
                return self._append_audit(entries, chain)
            except (IntegrityError, OperationalError):
                if attempt == 19:
                    raise
                time.sleep(0.01 * (attempt + 1))
        return 0

    def _append_audit(self, entries: Sequence[dict[str, Any]], chain: Any) -> int:
        with self._tx() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263542)")
            else:
                # Any write statement takes SQLite's write lock, so the head read below is current.
                conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.id == -1).values(last_seq=0))
            last = conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            ).first()
            if last is None:
                cp = conn.execute(
                    select(audit_checkpoints.c.last_seq, audit_checkpoints.c.last_hash)
                    .order_by(audit_checkpoints.c.id.desc())
                    .limit(1)
                ).first()
                seq, prev = (int(cp[0]), cp[1]) if cp else (0, "0" * 64)
            else:
                seq, prev = int(last[0]), last[1]
            rows = []
            for e in entries:
                seq += 1
                h = chain(prev, seq, e)
                rows.append({**e, "seq": seq, "prev_hash": prev, "hash": h})
                prev = h
            if rows:
                conn.execute(audit_log.insert(), rows)
            return len(rows)

    def query_audit(
        self,
        actor: str | None = None,
        action: str | None = None,
        repo: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[AuditRow]:
        q = select(audit_log).order_by(audit_log.c.seq)
        if actor:
            q = q.where(audit_log.c.actor == actor)
        if action:
            q = q.where(audit_log.c.action == action)
        if repo:
            q = q.where(audit_log.c.repo == repo)
        if since:
            q = q.where(audit_log.c.ts >= since)
        if until:
            q = q.where(audit_log.c.ts < until)
        if after_seq is not None:
            q = q.where(audit_log.c.seq > after_seq)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [self._audit(r) for r in conn.execute(q)]

    @staticmethod
    def _audit(r: Sequence[Any]) -> AuditRow:
        return AuditRow(int(r[0]), aware(r[1]) or utcnow(), *r[2:])

    def iter_audit(self, batch: int = 5000) -> Iterator[AuditRow]:
        after = None
        while True:
            rows = self.query_audit(after_seq=after, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def checkpoint(self) -> tuple[int, str] | None:
        with self.engine.connect() as conn:
            cp = conn.execute(
                select(audit_checkpoints.c.last_seq, audit_checkpoints.c.last_hash)
                .order_by(audit_checkpoints.c.id.desc())
                .limit(1)
            ).first()
        return (int(cp[0]), cp[1]) if cp else None

    def prune_audit(self, before: dt.datetime) -> int:
        """Delete entries older than ``before``, keeping the newest entry and recording a checkpoint."""
        with self._tx() as conn:
            newest = conn.execute(select(func.max(audit_log.c.seq))).scalar()
            last = conn.execute(
                select(audit_log.c.seq, audit_log.c.hash)
                .where(audit_log.c.ts < before, audit_log.c.seq < (newest or 0))
                .order_by(audit_log.c.seq.desc())
                .limit(1)
            ).first()
            if last is None:
                return 0
            conn.execute(audit_checkpoints.insert().values(last_seq=last[0], last_hash=last[1], created_at=utcnow()))
            return conn.execute(delete(audit_log).where(audit_log.c.seq <= last[0])).rowcount

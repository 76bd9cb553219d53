"""Authentication (passwords, tokens, JWTs), authorization (roles and scopes) and account management.

Every change to identities or permissions goes through :class:`AccessService` so it is
audited in one place; HTTP handlers and CLI commands only call these methods.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from sqlalchemy import Engine

from hallmark.access import crypto, shadow
from hallmark.access.audit import ALLOWED, DENIED, AuditLog
from hallmark.access.ldap import LdapLogin
from hallmark.access.model import (
    ADMIN,
    ADMINISTRATOR,
    CATALOG_ROLES,
    PULL,
    REPO_ROLES,
    Identity,
    Scope,
    expand_actions,
    valid_principal_name,
)
from hallmark.access.ratelimit import DatabaseCounters, RateLimited, RateLimiter
from hallmark.access.store import AccessStore, Conflict, NotFound, Principal, utcnow
from hallmark.config import Config
from hallmark.metadata import secrets as instance_secrets

log = logging.getLogger(__name__)

__all__ = [
    "AccessDenied",
    "AccessService",
    "AuthFailed",
    "Conflict",
    "NotFound",
    "Permissions",
    "RateLimited",
    "RateLimiter",
]


class AuthFailed(Exception):
    """Bad or unusable credentials (the message never contains the secret)."""


class AccessDenied(Exception):
    """Authenticated, but not allowed."""


@dataclass
class Permissions:
    """What one identity may do, resolved once per request (one grants query)."""

    identity: Identity
    catalog_roles: frozenset[str]
    rules: list[tuple[str, str, frozenset[str]]]  # (scope_kind, scope, actions)
    service: AccessService

    def actions(self, repo: str) -> frozenset[str]:
        ident = self.identity
        if ident.jwt_access is not None and not ident.restricted:
            pass  # an API session JWT stands for the principal
        elif ident.jwt_access is not None:
            return ident.jwt_access.get(("repository", repo), frozenset())
        got: set[str] = set()
        if ADMINISTRATOR in self.catalog_roles:
            got |= REPO_ROLES["admin"]
        else:
            for kind, scope, acts in self.rules:
                if (kind == "repository" and scope == repo) or (kind == "namespace" and repo.startswith(scope + "/")):
                    got |= acts
        if PULL not in got and self.service.is_public(repo):
            got.add(PULL)
        if ident.token_scopes is not None:
            allowed: set[str] = set()
            for s in ident.token_scopes:
                if s.matches(repo):
                    allowed |= s.actions
            got &= allowed
        return frozenset(got)

    def can(self, repo: str, action: str) -> bool:
        return action in self.actions(repo)

    def has_role(self, role: str) -> bool:
        return role in self.catalog_roles


class AccessService:
    def __init__(self, config: Config, engine: Engine, write_lock: threading.Lock | None = None) -> None:
        self.config = config
        self.cfg = config.access
        self.store = AccessStore(engine, write_lock)
        self.audit = AuditLog(self.store, self.cfg.audit_flush_interval_seconds)
        # Failed-login counters in the database: a guesser gets no more tries by spreading them over replicas.
        self.limiter = RateLimiter(
            self.cfg.max_failed_per_user,
            self.cfg.max_failed_per_address,
            self.cfg.failed_window_seconds,
            counters=DatabaseCounters(engine, self.store.transaction),
        )
        self._signer: crypto.TokenSigner | None = None
        # Verified Basic credentials for a minute, keyed by an HMAC (never the password) and the stored hash.
        # Neither cache can answer for a change made on another replica: the principal (password hash,
        # disabled flag), its token and its grants are read again on every request, so revocation is immediate.
        self._verified: dict[bytes, float] = {}
        self._cache_key = secrets.token_bytes(32)
        # Signature-verified JWTs by SHA-256 of the token: (expiry, identity); the signature cannot change.
        self._jwt_cache: dict[bytes, tuple[float, Identity]] = {}
        self.ldap = LdapLogin(self.cfg.ldap) if self.cfg.ldap.url else None

    @classmethod
    def for_metadata(cls, config: Config, meta: Any) -> AccessService:
        """Share the registry's engine and SQLite writer lock."""
        return cls(config, meta.engine, getattr(meta, "_write_lock", None))

    @property
    def signer(self) -> crypto.TokenSigner:
        if self._signer is None:
            pem = instance_secrets.get_or_create(
                self.store.engine,
                instance_secrets.TOKEN_SIGNING_KEY,
                crypto.new_signing_key_pem,
                legacy_file=self.config.data_path / "access" / "token-signing-key.pem",
            )
            self._signer = crypto.TokenSigner(pem, self.cfg.service, self.cfg.token_lifetime_seconds)
        return self._signer

    # -- bootstrap ----------------------------------------------------------------------
    def bootstrap(self) -> str | None:
        """Create ``admin`` with a random password when no user exists; returns the password once."""
        password = crypto.random_password()
        pid = self.store.create_principal(
            "admin", "user", crypto.hash_password(password), "initial administrator", only_if_no_users=True
        )
        if pid is None:
            return None
        self.store.add_grant("principal", "admin", "catalog", "", ADMINISTRATOR)
        crypto.write_secret_file(self.config.data_path / "initial-admin-password", password + "\n")
        self.audit.record("system", "user.create", result=ALLOWED, detail={"user": "admin", "bootstrap": True})
        return password

    # -- authentication ------------------------------------------------------------------------
    def authenticate(self, username: str, secret: str, client_addr: str | None, audit_success: bool = True) -> Identity:
        """Check a user password or an API/robot token; failures count towards the rate limit."""
        username = username[:128]
        wait, had_failures = self.limiter.check(username, client_addr)
        if wait > 0:
            self.audit.record(
                username, "login", result=DENIED, client_addr=client_addr, detail={"reason": "rate-limited"}
            )
            seconds = math.ceil(wait)
            raise RateLimited(f"too many failed logins; try again in {seconds} s", seconds)
        ident: Identity | None = None
        reason = "bad credentials"
        if crypto.parse_token_id(secret) is not None:
            ident, reason = self._check_token(secret, username)
        else:
            p = self.store.principal(username)
            stored = p.password_hash if p is not None and p.kind == "user" else None
            if self.ldap is not None and (p is None or shadow.backed_by(p, "ldap")):
                # Unknown here or owned by the directory: LDAP checks the password (never stored).
                ident, reason = self.ldap.login(self, username, secret, client_addr)
            elif self._cached_ok(username, secret, stored) or crypto.verify_password(stored, secret):
                assert p is not None
                if p.disabled:
                    reason = "account disabled"
                else:
                    ident = Identity(p.name, p.kind, p.id)
                    self._remember(username, secret, stored)
                    if stored and crypto.needs_rehash(stored):
                        self.store.update_principal(p.name, password_hash=crypto.hash_password(secret))
        if ident is None:
            self.limiter.fail(username, client_addr)
            self.audit.record(username, "login", result=DENIED, client_addr=client_addr, detail={"reason": reason})
            raise AuthFailed(reason)
        if had_failures:
            self.limiter.succeeded(username, client_addr)
        if audit_success:
            self.audit.record(ident.name, "login", result=ALLOWED, client_addr=client_addr)
        return ident

    def _cache_digest(self, username: str, secret: str, stored: str | None) -> bytes:
        msg = "\0".join((username, secret, stored or "")).encode("utf-8", "surrogateescape")
        return hmac.new(self._cache_key, msg, hashlib.sha256).digest()

    def _cached_ok(self, username: str, secret: str, stored: str | None) -> bool:
        if stored is None:
            return False
        exp = self._verified.get(self._cache_digest(username, secret, stored))
        return exp is not None and exp > time.monotonic()

    def _remember(self, username: str, secret: str, stored: str | None) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[self._cache_digest(username, secret, stored)] = time.monotonic() + 60

    def _check_token(self, token: str, username: str | None) -> tuple[Identity | None, str]:
        tid = crypto.parse_token_id(token)
        row = self.store.token(tid) if tid else None
        # Compare against a dummy digest when the id is unknown: the same work either way.
        ok = crypto.token_matches(token, row.secret_sha256 if row else "0" * 64) and row is not None
        if not ok or row is None:
            return None, "bad credentials"
        if username is not None and not hmac.compare_digest(username.encode(), row.principal.name.encode()):
            return None, "bad credentials"
        if row.revoked_at is not None:
            return None, "token revoked"
        if row.expires_at is not None and row.expires_at <= utcnow():
            return None, "token expired"
        if row.principal.disabled:
            return None, "account disabled"
        scopes = tuple(Scope.parse(s) for s in orjson.loads(row.scopes)) if row.scopes else None
        return Identity(row.principal.name, row.principal.kind, row.principal.id, row.id, scopes), ""

    def authenticate_token(self, token: str, client_addr: str | None) -> Identity:
        """A bare API/robot token (``Authorization: Bearer hmk_...``)."""
        ident, reason = self._check_token(token, None)
        if ident is None:
            self.audit.record("unknown", "login", result=DENIED, client_addr=client_addr, detail={"reason": reason})
            raise AuthFailed(reason)
        return ident

    def verify_jwt(self, token: str) -> Identity:
        """A registry JWT we issued; revocation and disabled accounts are honoured at once.

        The signature check is cached per token until it expires (the hot pull path); the
        revocation check is one indexed read every time, so a revoked token fails everywhere at once.
        """
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        hit = self._jwt_cache.get(key)
        if hit is not None and hit[0] > time.time():
            ident = hit[1]
        else:
            ident, exp = self._decode_jwt(token)
            if len(self._jwt_cache) > 10_000:
                self._jwt_cache.clear()
            self._jwt_cache[key] = (exp, ident)
        if ident.principal_id is not None and not self.store.session_valid(
            ident.principal_id, ident.name, ident.token_id, utcnow()
        ):
            raise AuthFailed("token no longer valid")
        return ident

    def _decode_jwt(self, token: str) -> tuple[Identity, float]:
        try:
            claims = self.signer.verify(token)
        except jwt.InvalidTokenError as exc:
            raise AuthFailed("invalid token") from exc
        access: dict[tuple[str, str], frozenset[str]] = {}
        try:
            for entry in claims.get("access") or []:
                key = (str(entry["type"]), str(entry["name"]))
                access[key] = access.get(key, frozenset()) | expand_actions(set(map(str, entry["actions"])))
            hm = claims.get("hmk") or {}
            pid = hm.get("pid")
            tid = hm.get("tid")
            kind = str(hm.get("kind", "anonymous"))
            exp = float(claims["exp"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise AuthFailed("invalid token") from exc
        if pid is not None and not isinstance(pid, int):
            raise AuthFailed("invalid token")
        if pid is None and kind != "anonymous":
            raise AuthFailed("invalid token")
        if tid is not None and not isinstance(tid, str):
            raise AuthFailed("invalid token")
        return Identity(str(claims["sub"]), kind, pid, tid, None, access), exp

    # -- authorization -----------------------------------------------------------------------------
    def underlying(self, ident: Identity) -> Identity:
        """The principal behind a registry JWT, keeping the scopes of the token it was obtained with."""
        if ident.jwt_access is None or ident.principal_id is None:
            return Identity(ident.name, ident.kind, ident.principal_id, ident.token_id, ident.token_scopes)
        scopes = None
        if ident.token_id is not None:
            row = self.store.token(ident.token_id)
            scopes = tuple(Scope.parse(s) for s in orjson.loads(row.scopes)) if row and row.scopes else None
        return Identity(ident.name, ident.kind, ident.principal_id, ident.token_id, scopes)

    def is_public(self, repo: str) -> bool:
        v = self.store.is_public(repo)
        return self.cfg.anonymous_pull_default if v is None else v

    def permissions(self, ident: Identity) -> Permissions:
        if ident.principal_id is None or (ident.restricted and ident.jwt_access is not None):
            # Anonymous, or a registry JWT: its claims are the whole answer, no grants query.
            return Permissions(ident, frozenset(), [], self)
        roles: set[str] = set()
        rules = []
        for kind, scope, role in self.store.effective_grants(ident.principal_id):
            if kind == "catalog":
                roles.add(role)
            elif role in REPO_ROLES:
                rules.append((kind, scope, REPO_ROLES[role]))
        if ident.restricted:
            roles = set()  # scoped tokens and registry JWTs never carry catalog roles
        return Permissions(ident, frozenset(roles), rules, self)

    def grant_scopes(self, ident: Identity, requested: Iterable[tuple[str, str, set[str]]]) -> list[dict[str, Any]]:
        """Docker token ``access``: requested ∩ permitted, per requested resource."""
        perms = self.permissions(ident)
        out: list[dict[str, Any]] = []
        for rtype, name, actions in requested:
            if rtype == "repository":
                allowed = perms.actions(name)
                want = expand_actions(actions) if "*" in actions else frozenset(actions)
                granted = sorted((want & allowed) - {ADMIN})
                if granted:
                    out.append({"type": "repository", "name": name, "actions": granted})
            elif rtype == "registry" and name == "catalog" and not ident.anonymous:
                out.append({"type": "registry", "name": "catalog", "actions": ["*"]})
            elif rtype == "hallmark" and name == "api" and not ident.anonymous and ident.token_scopes is None:
                out.append({"type": "hallmark", "name": "api", "actions": ["*"]})
        return out

    def issue_jwt(self, ident: Identity, access: list[dict[str, Any]]) -> tuple[str, int, int]:
        extra = {"hmk": {"pid": ident.principal_id, "tid": ident.token_id, "kind": ident.kind}}
        return self.signer.issue(ident.name, access, extra)

    # -- management (every call audited) ---------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not valid_principal_name(name):
            raise ValueError(f"invalid name {name!r}: lowercase letters, digits, '.', '_', '-'")

    def add_user(
        self, actor: str, name: str, password: str, roles: Iterable[str] = (), client_addr: str | None = None
    ) -> None:
        self._check_name(name)
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        self.store.create_principal(name, "user", crypto.hash_password(password))
        self.audit.record(actor, "user.create", client_addr=client_addr, detail={"user": name})
        for role in roles:
            self.grant(actor, "principal", name, "catalog", "", role, client_addr)

    def set_password(self, actor: str, name: str, password: str, client_addr: str | None = None) -> None:
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        p = self.store.principal(name)
        if p is None or p.kind != "user":
            raise NotFound(name)
        self.store.update_principal(name, password_hash=crypto.hash_password(password))
        self.audit.record(actor, "user.password", client_addr=client_addr, detail={"user": name})

    def set_disabled(self, actor: str, name: str, disabled: bool, client_addr: str | None = None) -> None:
        self.store.update_principal(name, disabled=disabled)
        self.audit.record(
            actor, "user.disable" if disabled else "user.enable", client_addr=client_addr, detail={"user": name}
        )

    def delete_principal(self, actor: str, name: str, client_addr: str | None = None) -> None:
        p = self.store.principal(name)
        if p is None:
            raise NotFound(name)
        self.store.delete_principal(name)
        self.audit.record(actor, f"{p.kind}.delete", client_addr=client_addr, detail={p.kind: name})

    def principal(self, name: str) -> Principal | None:
        return self.store.principal(name)

    def create_robot(
        self,
        actor: str,
        name: str,
        scopes: list[str],
        expires_days: float | None = None,
        client_addr: str | None = None,
    ) -> tuple[str, str]:
        """A robot with grants matching its scopes and one token carrying them; returns (token id, token)."""
        self._check_name(name)
        parsed = [Scope.parse(s) for s in scopes]
        if not parsed:
            raise ValueError("a robot needs at least one scope")
        self.store.create_principal(name, "robot", None)
        self.audit.record(actor, "robot.create", client_addr=client_addr, detail={"robot": name, "scopes": scopes})
        for s in parsed:
            kind, target = _scope_target(s.pattern)
            for role in _roles_for(s.actions):
                self.grant(actor, "principal", name, kind, target, role, client_addr)
        return self.create_token(actor, name, "robot", scopes, expires_days, client_addr)

    def create_token(
        self,
        actor: str,
        owner: str,
        name: str,
        scopes: list[str] | None,
        expires_days: float | None = None,
        client_addr: str | None = None,
    ) -> tuple[str, str]:
        p = self.store.principal(owner)
        if p is None:
            raise NotFound(owner)
        parsed = [str(Scope.parse(s)) for s in scopes] if scopes is not None else None
        token_id, token, digest = crypto.new_token()
        expires = utcnow() + dt.timedelta(days=expires_days) if expires_days else None
        self.store.create_token(
            token_id, p.id, name[:128], digest, orjson.dumps(parsed).decode() if parsed else None, expires
        )
        self.audit.record(
            actor,
            "token.create",
            client_addr=client_addr,
            detail={
                "owner": owner,
                "token_id": token_id,
                "scopes": parsed,
                "expires_at": expires.isoformat() if expires else None,
            },
        )
        return token_id, token

    def prune_tokens(self, actor: str, after_days: int, now: dt.datetime | None = None) -> int:
        """Delete tokens that expired or were revoked more than ``after_days`` ago (portal and OIDC
        sessions are tokens too: they would pile up forever). Live tokens are never touched; the
        count is audited as ``token.prune``."""
        before = (now or utcnow()) - dt.timedelta(days=after_days)
        n = self.store.prune_tokens(before)
        if n:
            self.audit.record(
                actor, "token.prune", result=ALLOWED, detail={"deleted": n, "dead_before": before.isoformat()}
            )
        return n

    def revoke_token(self, actor: str, token_id: str, client_addr: str | None = None) -> bool:
        ok = self.store.revoke_token(token_id)
        self.audit.record(
            actor,
            "token.revoke",
            client_addr=client_addr,
            result=ALLOWED if ok else DENIED,
            detail={"token_id": token_id},
        )
        return ok

    def revoke_robot(self, actor: str, name: str, client_addr: str | None = None) -> int:
        """Revoke every token of a robot and disable it; returns how many tokens were live."""
        p = self.store.principal(name)
        if p is None or p.kind != "robot":
            raise NotFound(name)
        n = sum(
            self.revoke_token(actor, t.id, client_addr) for t in self.store.list_tokens(name) if t.revoked_at is None
        )
        self.store.update_principal(name, disabled=True)
        self.audit.record(actor, "robot.revoke", client_addr=client_addr, detail={"robot": name, "tokens": n})
        return n

    def grant(
        self,
        actor: str,
        subject_kind: str,
        subject: str,
        scope_kind: str,
        scope: str,
        role: str,
        client_addr: str | None = None,
    ) -> bool:
        _check_grant(scope_kind, scope, role)
        if scope_kind == "namespace":
            try:
                self.store.create_namespace(scope)
            except Conflict:
                pass
        new = self.store.add_grant(subject_kind, subject, scope_kind, scope, role)
        self.audit.record(
            actor,
            "permission.grant",
            repo=scope if scope_kind == "repository" else None,
            client_addr=client_addr,
            detail={
                "subject": subject,
                "subject_kind": subject_kind,
                "scope_kind": scope_kind,
                "scope": scope,
                "role": role,
            },
        )
        return new

    def revoke(
        self,
        actor: str,
        subject_kind: str,
        subject: str,
        scope_kind: str,
        scope: str,
        role: str,
        client_addr: str | None = None,
    ) -> bool:
        gone = self.store.remove_grant(subject_kind, subject, scope_kind, scope, role)
        self.audit.record(
            actor,
            "permission.revoke",
            repo=scope if scope_kind == "repository" else None,
            client_addr=client_addr,
            result=ALLOWED if gone else DENIED,
            detail={
                "subject": subject,
                "subject_kind": subject_kind,
                "scope_kind": scope_kind,
                "scope": scope,
                "role": role,
            },
        )
        return gone

    def set_public(self, actor: str, repo: str, public: bool, client_addr: str | None = None) -> None:
        self.store.set_public(repo, public)
        self.audit.record(actor, "repository.visibility", repo=repo, client_addr=client_addr, detail={"public": public})

    def create_team(self, actor: str, name: str, client_addr: str | None = None) -> None:
        self._check_name(name)
        self.store.create_team(name)
        self.audit.record(actor, "team.create", client_addr=client_addr, detail={"team": name})

    def delete_team(self, actor: str, name: str, client_addr: str | None = None) -> None:
        self.store.delete_team(name)
        self.audit.record(actor, "team.delete", client_addr=client_addr, detail={"team": name})

    def set_membership(self, actor: str, team: str, member: str, present: bool, client_addr: str | None = None) -> None:
        self.store.set_membership(team, member, present)
        action = "team.add_member" if present else "team.remove_member"
        self.audit.record(actor, action, client_addr=client_addr, detail={"team": team, "member": member})

    def create_namespace(self, actor: str, name: str, description: str | None, client_addr: str | None = None) -> None:
        self._check_name(name)
        self.store.create_namespace(name, description)
        self.audit.record(actor, "namespace.create", client_addr=client_addr, detail={"namespace": name})

    def delete_namespace(self, actor: str, name: str, client_addr: str | None = None) -> None:
        self.store.delete_namespace(name)
        self.audit.record(actor, "namespace.delete", client_addr=client_addr, detail={"namespace": name})


def _check_grant(scope_kind: str, scope: str, role: str) -> None:
    if scope_kind == "catalog":
        if role not in CATALOG_ROLES or scope:
            raise ValueError(f"catalog role must be one of {sorted(CATALOG_ROLES)}")
    elif scope_kind in ("namespace", "repository"):
        if role not in REPO_ROLES or not scope:
            raise ValueError(f"{scope_kind} role must be one of {sorted(REPO_ROLES)}")
    else:
        raise ValueError("scope kind must be namespace, repository or catalog")


def _scope_target(pattern: str) -> tuple[str, str]:
    if pattern == "*":
        raise ValueError("robots are limited to a repository or a namespace (ns/*)")
    if pattern.endswith("/*"):
        return "namespace", pattern[:-2]
    return "repository", pattern


def _roles_for(actions: frozenset[str]) -> list[str]:
    roles = []
    if "push" in actions:
        roles.append("write")
    elif "pull" in actions:
        roles.append("read")
    if "delete" in actions:
        roles.append("delete")
    return roles

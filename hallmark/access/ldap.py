"""LDAP bind authentication (``access.ldap``) with ldap3.

The directory checks the password (a simple bind as the user), so Hallmark never stores it;
the user's groups are mapped to teams and catalog roles on a local shadow user (see
:mod:`hallmark.access.shadow`). Every value put into a filter is escaped with
``escape_filter_chars`` and into a DN with ``escape_rdn``: a user name such as ``*)(uid=*``
matches nothing. Passwords are never logged, and ldap3's own logging stays off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from hallmark.access import shadow
from hallmark.access.model import CATALOG_ROLES, Identity, valid_principal_name
from hallmark.config import LdapConfig

if TYPE_CHECKING:
    from hallmark.access.service import AccessService

log = logging.getLogger(__name__)

SOURCE = "ldap"


class LdapUnavailable(Exception):
    """The directory could not be reached or refused the service account (not the user's fault)."""


@dataclass(frozen=True)
class LdapUser:
    dn: str
    username: str
    groups: frozenset[str]


class LdapDirectory:
    """Bind and group lookups against one directory; a fresh connection per login (thread-safe)."""

    def __init__(self, cfg: LdapConfig) -> None:
        if not cfg.url:
            raise ValueError("access.ldap.url is not set")
        if not cfg.user_dn_template and not (cfg.bind_dn and cfg.user_base_dn):
            raise ValueError("access.ldap needs user_dn_template, or bind_dn and user_base_dn to search users")
        for roles in cfg.group_roles.values():
            bad = set(roles) - CATALOG_ROLES
            if bad:
                raise ValueError(f"access.ldap.group_roles: unknown catalog roles {sorted(bad)}")
        self.cfg = cfg
        self._bind_password = cfg.bind_password
        if cfg.bind_password_file:
            self._bind_password = Path(cfg.bind_password_file).read_text(encoding="utf-8").strip()
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file) if (cfg.start_tls or cfg.ca_file) else None
        self.server = Server(cfg.url, connect_timeout=cfg.timeout_seconds, get_info=NONE, tls=tls)

    def _connect(self, user: str | None, password: str | None) -> Connection | None:
        """A bound connection, or None when the directory rejects the credentials."""
        conn = Connection(
            self.server,
            user=user,
            password=password,
            receive_timeout=math.ceil(self.cfg.timeout_seconds),  # ldap3 packs it as an integer
            raise_exceptions=False,
            read_only=True,
        )
        try:
            conn.open()
            if self.cfg.start_tls and not conn.start_tls():
                raise LdapUnavailable("StartTLS failed")
            if conn.bind():
                return conn
        except (LDAPException, OSError) as exc:
            conn.unbind()
            raise LdapUnavailable(type(exc).__name__) from None  # the message may echo the request
        conn.unbind()
        return None

    def _search(self, conn: Connection, base: str, flt: str, attrs: list[str], limit: int = 0) -> list[dict[str, Any]]:
        try:
            conn.search(base, flt, SUBTREE, attributes=attrs, size_limit=limit)
        except LDAPException as exc:
            raise LdapUnavailable(type(exc).__name__) from None
        return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]

    def authenticate(self, username: str, password: str) -> LdapUser | None:
        """The user and its group names when the password binds; None otherwise."""
        cfg = self.cfg
        if not username or not password:
            return None  # an empty password is an unauthenticated bind, which "succeeds"
        service: Connection | None = None
        user_conn: Connection | None = None
        try:
            if cfg.bind_dn and cfg.user_base_dn:
                service = self._connect(cfg.bind_dn, self._bind_password)
                if service is None:
                    raise LdapUnavailable("service bind rejected")
                flt = cfg.user_filter.format(username=escape_filter_chars(username))
                found = self._search(service, cfg.user_base_dn, flt, [], 2)
                if len(found) != 1:
                    return None  # unknown or ambiguous: never bind as "the first match"
                dn = str(found[0]["dn"])
            else:
                assert cfg.user_dn_template
                dn = cfg.user_dn_template.format(username=escape_rdn(username))
            user_conn = self._connect(dn, password)
            if user_conn is None:
                return None
            groups: set[str] = set()
            if cfg.group_base_dn:
                flt = cfg.group_filter.format(dn=escape_filter_chars(dn), username=escape_filter_chars(username))
                attr = cfg.group_name_attribute
                for entry in self._search(service or user_conn, cfg.group_base_dn, flt, [attr]):
                    value = (entry.get("attributes") or {}).get(attr)
                    for v in value if isinstance(value, list) else [value]:
                        if v:
                            groups.add(str(v).lower())
            return LdapUser(dn, username, frozenset(groups))
        finally:
            for c in (service, user_conn):
                if c is not None:
                    c.unbind()


class LdapLogin:
    """Basic-auth logins for users the directory owns: bind, then sync the shadow user."""

    def __init__(self, cfg: LdapConfig) -> None:
        self.cfg = cfg
        self.directory = LdapDirectory(cfg)
        self._ok: dict[bytes, float] = {}  # HMAC(user, password) -> expiry; never the password
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str) -> bytes:
        msg = (username + "\0" + password).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def login(
        self, access: AccessService, username: str, password: str, client_addr: str | None
    ) -> tuple[Identity | None, str]:
        """(identity, "") on success, else (None, reason for the audit log)."""
        if not valid_principal_name(username):
            return None, "bad credentials"
        key = self._digest(username, password)
        now = time.monotonic()
        with self._lock:
            cached = self._ok.get(key, 0.0) > now
        p = access.store.principal(username)
        if cached and p is not None and shadow.backed_by(p, SOURCE):
            return (None, "account disabled") if p.disabled else (Identity(p.name, p.kind, p.id), "")
        try:
            user = self.directory.authenticate(username, password)
        except LdapUnavailable as exc:
            log.warning("LDAP login for %r failed: directory unavailable (%s)", username, exc)
            return None, "ldap unavailable"
        if user is None:
            return None, "bad credentials"
        p = shadow.sync_user(
            access, username, SOURCE, user.dn, user.groups, self.cfg.group_teams, self.cfg.group_roles, client_addr
        )
        if p is None:
            return None, "name taken by a non-LDAP account"
        if p.disabled:
            return None, "account disabled"
        if self.cfg.cache_seconds:
            with self._lock:
                if len(self._ok) > 10_000:
                    self._ok.clear()
                self._ok[key] = now + self.cfg.cache_seconds
        return Identity(p.name, p.kind, p.id), ""

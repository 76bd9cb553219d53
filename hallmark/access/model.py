"""Roles, actions, scopes and the caller's identity: pure data, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PULL, PUSH, DELETE, ADMIN = "pull", "push", "delete", "admin"
REPO_ACTIONS = frozenset({PULL, PUSH, DELETE})

# Roles on a namespace or repository, and the registry actions they allow.
REPO_ROLES: dict[str, frozenset[str]] = {
    "read": frozenset({PULL}),
    "write": frozenset({PULL, PUSH}),
    "delete": frozenset({DELETE}),  # explicit delete permission, without admin
    "admin": frozenset({PULL, PUSH, DELETE, ADMIN}),
}
# Catalog-wide roles. Only the administrator implies repository access.
SECURITY_REVIEWER, AUDITOR, ADMINISTRATOR = "security_reviewer", "auditor", "administrator"
# Posts Kubernetes inventories (hallmark k8s report in a cluster) and nothing else.
CLUSTER_REPORTER = "cluster_reporter"
CATALOG_ROLES = frozenset({SECURITY_REVIEWER, AUDITOR, ADMINISTRATOR, CLUSTER_REPORTER})

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


def valid_principal_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def safe_next(value: str | None) -> str:
    """Where to go after a login: only a local path (``/`` otherwise), so a ``next`` parameter never
    sends a fresh session to another site. One rule for the portal's and the OIDC login."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"  # browsers drop tabs and newlines: "/\t/evil.example" would become "//evil.example"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


def expand_actions(actions: set[str] | frozenset[str]) -> frozenset[str]:
    """Docker's ``*`` means every repository action."""
    return REPO_ACTIONS if "*" in actions else frozenset(actions) & (REPO_ACTIONS | {ADMIN})


@dataclass(frozen=True)
class Scope:
    """``repository:<name | ns/* | *>:<actions>`` as carried by robot and personal tokens."""

    pattern: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, rest = text.partition(":")
        pattern, _, actions = rest.rpartition(":")
        acts = {a.strip() for a in actions.split(",") if a.strip()}
        if kind != "repository" or not pattern or not acts or not acts <= (REPO_ACTIONS | {"*"}):
            raise ValueError(f"invalid scope {text!r} (want repository:<name|ns/*|*>:pull,push,delete)")
        return cls(pattern, expand_actions(acts))

    def matches(self, repo: str) -> bool:
        if self.pattern == "*":
            return True
        if self.pattern.endswith("/*"):
            return repo.startswith(self.pattern[:-1])
        return repo == self.pattern

    def __str__(self) -> str:
        return f"repository:{self.pattern}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class Identity:
    """Who is calling, and any restriction carried by the credential itself."""

    name: str
    kind: str  # user | robot | anonymous
    principal_id: int | None = None
    token_id: str | None = None
    # A scoped robot/personal token: access never exceeds these.
    token_scopes: tuple[Scope, ...] | None = None
    # A registry JWT: exactly the granted claims, {(type, name): actions}.
    jwt_access: dict[tuple[str, str], frozenset[str]] | None = field(default=None, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    @property
    def restricted(self) -> bool:
        """True when the credential is narrower than the principal (no catalog roles through it)."""
        if self.token_scopes is not None:
            return True
        return self.jwt_access is not None and ("hallmark", "api") not in self.jwt_access


ANONYMOUS = Identity("anonymous", "anonymous")

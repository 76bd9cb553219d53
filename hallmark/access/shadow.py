"""Local shadow users for external identities (LDAP, OIDC) and their group-derived teams and roles.

Grants keep working on local names: an external login creates (or updates) a user without a
password whose description names its source, and re-derives the *mapped* teams and catalog
roles from the provider's groups at every login, so removal from a group takes effect at the
next login. Teams and roles not named in a mapping are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from hallmark.access.audit import ALLOWED
from hallmark.access.store import Conflict, Principal

if TYPE_CHECKING:
    from hallmark.access.service import AccessService


def marker(source: str, subject: str) -> str:
    return f"{source}:{subject}"


def backed_by(p: Principal, source: str) -> bool:
    """A passwordless user created by ``source`` (a local password always wins over a provider)."""
    return p.kind == "user" and p.password_hash is None and (p.description or "").startswith(source + ":")


def sync_user(
    access: AccessService,
    name: str,
    source: str,
    subject: str,
    groups: Iterable[str],
    group_teams: Mapping[str, list[str]],
    group_roles: Mapping[str, list[str]],
    client_addr: str | None,
    same_subject: bool = False,
) -> Principal | None:
    """Create/update the shadow user and its mapped teams and roles; None when the name belongs to
    someone else (a local user, another provider, or with ``same_subject`` another subject)."""
    store = access.store
    desc = marker(source, subject)
    p = store.principal(name)
    if p is None:
        try:
            store.create_principal(name, "user", None, desc)
            access.audit.record(source, "user.create", client_addr=client_addr, detail={"user": name, "source": source})
        except Conflict:
            pass  # a concurrent first login created it
        p = store.principal(name)
        if p is None:
            return None
    if not backed_by(p, source) or (same_subject and p.description != desc):
        return None
    if p.description != desc:
        store.update_principal(name, description=desc)
    wanted = {g.lower() for g in groups}
    want_teams = {t for g in wanted for t in group_teams.get(g, [])}
    have_teams = set(store.teams_of(p.id))
    for team in sorted({t for ts in group_teams.values() for t in ts}):
        if (team in want_teams) == (team in have_teams):
            continue
        if team in want_teams:
            try:
                store.create_team(team)
                access.audit.record(source, "team.create", client_addr=client_addr, detail={"team": team})
            except Conflict:
                pass
        access.set_membership(source, team, name, team in want_teams, client_addr)
    want_roles = {r for g in wanted for r in group_roles.get(g, [])}
    for role in sorted({r for rs in group_roles.values() for r in rs}):
        if role in want_roles:
            changed = store.add_grant("principal", name, "catalog", "", role)
        else:
            changed = store.remove_grant("principal", name, "catalog", "", role)
        if changed:
            action = "permission.grant" if role in want_roles else "permission.revoke"
            detail = {"subject": name, "subject_kind": "principal", "scope_kind": "catalog", "scope": "", "role": role}
            access.audit.record(source, action, result=ALLOWED, client_addr=client_addr, detail=detail)
    return p

"""Permission checks for API handlers that own their authorization (access control may be off)."""

from __future__ import annotations

from aiohttp import web

from hallmark.access.http import ACCESS_KEY, api_identity, api_permissions, client_addr, require_repo, require_role


async def guard_repo(request: web.Request, repo: str, action: str) -> None:
    """Per-repository permission when access control is on."""
    if ACCESS_KEY in request.app:
        await require_repo(request, repo, action)


async def guard_role(request: web.Request, *roles: str) -> None:
    if ACCESS_KEY in request.app:
        await require_role(request, *roles)


async def visible(request: web.Request, repos: list[str | None]) -> set[str | None]:
    """The subset of repositories the caller may pull (None stands for global entries)."""
    if ACCESS_KEY not in request.app:
        return set(repos)
    perms = await api_permissions(request)
    return {r for r in repos if r is None or perms.can(r, "pull")}


async def audit(
    request: web.Request, action: str, repo: str | None, digest: str | None, detail: dict[str, object]
) -> None:
    if ACCESS_KEY not in request.app:
        return
    ident = await api_identity(request)
    request.app[ACCESS_KEY].audit.record(
        ident.name, action, repo=repo, digest=digest, client_addr=client_addr(request), detail=detail
    )

"""Helpers for API handlers that filter listings by readability and record audit entries.

Access itself is declared per route (``hallmark.web.authz``) and enforced before handlers run;
these helpers only shape data and keep working when access control is off.
"""

from __future__ import annotations

from aiohttp import web

from hallmark.web.auth import ACCESS_KEY, api_identity, api_permissions, client_addr


async def visible(request: web.Request, repos: list[str | None]) -> set[str | None]:
    """The subset of repositories the caller may pull (None stands for global entries)."""
    if ACCESS_KEY not in request.app:
        return set(repos)
    perms = await api_permissions(request)
    return {r for r in repos if r is None or perms.can(r, "pull")}


async def actor(request: web.Request) -> str:
    """The caller's name for records (the client address when access control is off)."""
    if ACCESS_KEY not in request.app:
        return request.remote or "anonymous"
    return (await api_identity(request)).name


async def audit(
    request: web.Request, action: str, repo: str | None, digest: str | None, detail: dict[str, object]
) -> None:
    if ACCESS_KEY not in request.app:
        return
    ident = await api_identity(request)
    await request.app[ACCESS_KEY].audit.record_durable(
        ident.name, action, repo=repo, digest=digest, client_addr=client_addr(request), detail=detail
    )

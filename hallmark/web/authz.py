"""The authorization table: every HTTP route declares what it needs, and one middleware enforces it.

Handlers never check permissions themselves. A route is declared where it is listed
(``route("GET", path, handler, need)``); ``authorize`` resolves the caller and checks the
declaration before any handler runs, and a route without a declaration is refused (and the
server will not start with one: ``undeclared``). Handlers may still *filter* what they return
by readability (listings), which is data, not access.

Kinds of need:
- ``PUBLIC``: no identity is resolved at all (health, the token endpoint, login forms).
- ``ANYONE``: the caller is resolved (bad credentials are 401) but may be anonymous; the
  handler filters its listing by what the caller may pull.
- ``LOGIN``: any authenticated principal.
- ``roles``: one of these catalog roles (``administrator`` always qualifies).
- ``repo``: an action (pull, push, delete, admin) on the repository in the path parameter, or,
  for routes whose repository travels in the JSON body (``repo_in_body``), in that body field
  (an image reference ``repository@digest`` or ``repository:tag``), read before the handler runs.
- ``REGISTRY``: the /v2 dispatcher, whose own route table (``web.auth.registry_action``)
  is enforced by the registry guard around every registry handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NEEDS_ATTR = "hallmark_needs"


@dataclass(frozen=True)
class Need:
    """What a route requires of its caller; ``style`` picks how a refusal looks (JSON or portal)."""

    public: bool = False
    login: bool = False
    roles: tuple[str, ...] = ()
    repo: str | None = None  # pull | push | delete | admin on match_info[repo_param]
    repo_param: str = "name"
    repo_body: tuple[str, ...] = ()  # JSON body fields naming the repository (first one given), instead of repo_param
    registry: bool = False
    style: str = "api"  # api | portal

    def describe(self) -> str:
        if self.public:
            return "public"
        if self.registry:
            return "registry"
        parts = []
        if self.roles:
            parts.append("role " + "|".join(self.roles))
        if self.repo:
            parts.append(
                f"{self.repo} on body.{'|'.join(self.repo_body)}"
                if self.repo_body
                else f"{self.repo} on {{{self.repo_param}}}"
            )
        if not parts:
            parts.append("login" if self.login else "anyone")
        return " + ".join(parts)

    @property
    def portal(self) -> Need:
        return replace(self, style="portal")


PUBLIC = Need(public=True)
ANYONE = Need()
LOGIN = Need(login=True)
REGISTRY = Need(registry=True)
ADMINISTRATOR = "administrator"


def repo(action: str, param: str = "name") -> Need:
    return Need(login=action != "pull", repo=action, repo_param=param)


def repo_in_body(action: str, *body_fields: str) -> Need:
    """An action on the repository named by an image reference in a JSON body field (the first
    of ``body_fields`` the body gives: the handler must read them in the same order)."""
    return Need(login=action != "pull", repo=action, repo_body=body_fields)


def role(*roles: str, repo_action: str | None = None) -> Need:
    return Need(login=True, roles=roles or (ADMINISTRATOR,), repo=repo_action)


def declare(handler: Any, method: str, need: Need) -> None:
    """Attach the declaration to the handler (per method: one handler may serve several)."""
    needs: dict[str, Need] = handler.__dict__.setdefault(NEEDS_ATTR, {})
    method = method.upper()
    if needs.get(method, need) != need:
        raise ValueError(f"{getattr(handler, '__qualname__', handler)}: two declarations for {method}")
    needs[method] = need


def route(method: str, path: str, handler: Handler, need: Need, **kwargs: Any) -> web.RouteDef:
    """A route definition with its authorization declaration; GET also serves HEAD."""
    declare(handler, method, need)
    if method.upper() == "GET":
        declare(handler, "HEAD", need)
    return web.route(method, path, handler, **kwargs)


def declared(defs: Iterable[web.RouteDef], need: Need) -> list[web.RouteDef]:
    """Declare every route in a list built elsewhere (OIDC login routes: all public)."""
    out = list(defs)
    for d in out:
        declare(d.handler, d.method, need)
        if d.method.upper() == "GET":
            declare(d.handler, "HEAD", need)
    return out


def need_of(method: str, handler: Any) -> Need | None:
    needs: dict[str, Need] | None = getattr(handler, NEEDS_ATTR, None)
    if needs is None:
        return None
    method = method.upper()
    return needs.get(method) or needs.get("*")


def undeclared(app: web.Application) -> list[str]:
    """Every routed (method, path) without a declaration; the server refuses to start with any."""
    missing = []
    for r in app.router.routes():
        if need_of(r.method, r.handler) is None:
            info = r.resource.canonical if r.resource is not None else "?"
            missing.append(f"{r.method} {info}")
    return missing

"""Users, team membership and repository permissions, for administrators (``/api/v1/users``,
``/api/v1/teams`` and ``/api/v1/permissions`` as forms).

Every route is declared ``administrator`` like its API twin and CSRF-checked before the handler;
the handlers call ``AccessService``, which validates and audits (``user.create``,
``user.disable``/``user.enable``, ``team.create``,
``team.add_member``/``team.remove_member``, ``permission.grant``/``permission.revoke``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hallmark.access.model import CATALOG_ROLES, REPO_ROLES
from hallmark.registry.names import valid_name
from hallmark.web.auth import client_addr

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import web

    from hallmark.access.service import AccessService
    from hallmark.portal.routes import Portal

PAGE = "/admin/access"
SUBJECT_KINDS = ("user", "robot", "team")
SCOPE_KINDS = ("repository", "namespace", "catalog")


def _service(portal: Portal, request: web.Request) -> AccessService:
    from hallmark.portal.session import PortalFailure

    access = portal.access(request)
    if access is None:
        raise PortalFailure(400, "Access control is off: there are no teams or permissions.")
    return access


async def _call(portal: Portal, fn: Callable[..., Any], *args: Any) -> Any:
    """Run an ``AccessService`` change; its refusals become the error page, saying what to fix."""
    from hallmark.access.store import Conflict, NotFound
    from hallmark.portal.session import PortalFailure

    try:
        return await portal.run(fn, *args)
    except Conflict as exc:
        raise PortalFailure(409, f"{exc} already exists.") from exc
    except NotFound as exc:
        raise PortalFailure(404, f"{exc} was not found; check the name.") from exc
    except ValueError as exc:
        raise PortalFailure(400, f"{exc}.") from exc


async def page(portal: Portal, request: web.Request) -> web.StreamResponse:
    viewer = await portal.viewer(request)
    access = portal.access(request)
    if access is None:
        return portal.render(request, "access.html", viewer, off=True, teams=[], grants=[], users=[])
    users = await portal.run(access.store.list_principals, "user")
    teams = await portal.run(access.store.list_teams)
    grants = await portal.run(access.store.list_grants)
    return portal.render(
        request,
        "access.html",
        viewer,
        off=False,
        users=[{"name": u.name, "disabled": u.disabled} for u in users],
        catalog_roles=sorted(CATALOG_ROLES),
        teams=teams,
        grants=grants,
        subject_kinds=SUBJECT_KINDS,
        scope_kinds=SCOPE_KINDS,
        roles=sorted(REPO_ROLES) + sorted(CATALOG_ROLES),
    )


async def create_team(portal: Portal, request: web.Request) -> web.StreamResponse:
    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = _service(portal, request)
    name = form.get("name", "").strip()[:64]
    await _call(portal, access.create_team, viewer.name or "portal", name, client_addr(request))
    return portal.redirect(request, PAGE)


async def membership(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Add (``present=1``) or remove a member of the team in the path."""
    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = _service(portal, request)
    team, member = request.match_info["team"], form.get("member", "").strip()[:128]
    present = form.get("present") == "1"
    await _call(portal, access.set_membership, viewer.name or "portal", team, member, present, client_addr(request))
    return portal.redirect(request, PAGE)


async def change_grant(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Grant (``present=1``) or revoke a role, with the checks of ``POST/DELETE /api/v1/permissions``."""
    from hallmark.portal.session import PortalFailure

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = _service(portal, request)
    subject, subject_kind = form.get("subject", "").strip()[:128], form.get("subject_kind", "user")
    scope_kind, scope, role = form.get("scope_kind", ""), form.get("scope", "").strip()[:255], form.get("role", "")
    if subject_kind not in SUBJECT_KINDS or scope_kind not in SCOPE_KINDS or not subject or not role:
        raise PortalFailure(400, "A permission needs a subject, a subject kind, a scope kind and a role.")
    if scope_kind == "repository" and not valid_name(scope):
        raise PortalFailure(400, f"{scope!r} is not a repository name.")
    kind = "team" if subject_kind == "team" else "principal"
    args = (viewer.name or "portal", kind, subject, scope_kind, scope, role, client_addr(request))
    if form.get("present") == "1":
        await _call(portal, access.grant, *args)
    elif not await _call(portal, access.revoke, *args):
        raise PortalFailure(404, "No such permission (it may have been revoked already).")
    return portal.redirect(request, PAGE)


async def create_user(portal: Portal, request: web.Request) -> web.StreamResponse:
    """A user with a password and optional catalog roles (``POST /api/v1/users``)."""
    from hallmark.portal.session import PortalFailure

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = _service(portal, request)
    name, password = form.get("name", "").strip()[:64], form.get("password", "")[:1024]
    roles = [r for r in (await request.post()).getall("roles", []) if isinstance(r, str)]
    if not name or not password or any(r not in CATALOG_ROLES for r in roles):
        raise PortalFailure(400, "A user needs a name, a password and only known catalog roles.")
    await _call(portal, access.add_user, viewer.name or "portal", name, password, roles, client_addr(request))
    return portal.redirect(request, PAGE)


async def set_disabled(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Disable (``disabled=1``) or enable the user in the path; never yourself."""
    from hallmark.portal.session import PortalFailure

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = _service(portal, request)
    name = request.match_info["user"]
    if name == viewer.name:
        raise PortalFailure(400, "You cannot disable yourself; ask another administrator.")
    disabled = form.get("disabled") == "1"
    await _call(portal, access.set_disabled, viewer.name or "portal", name, disabled, client_addr(request))
    return portal.redirect(request, PAGE)

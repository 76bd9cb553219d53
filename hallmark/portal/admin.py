"""Administration pages: robot accounts (administrators) and the audit log (auditors).

Declared like their API twins (``/api/v1/robots``: administrator; ``/api/v1/audit``: auditor),
enforced before the handler; the robot forms call ``AccessService``, which audits
``robot.create``/``robot.revoke`` as it does for the API.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.web.auth import client_addr

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal

ROBOT_DAYS_DEFAULT = 90
AUDIT_ROWS = 200
AUDIT_DEFAULT_DAYS = 7


async def robots(portal: Portal, request: web.Request, created: dict[str, Any] | None = None) -> web.StreamResponse:
    """Robots with their tokens (administrators only, as ``/api/v1/robots``)."""
    viewer = await portal.viewer(request)
    access = portal.access(request)
    if access is None:
        return portal.render(request, "robots.html", viewer, robots=[], off=True, created=None)

    def load() -> list[dict[str, Any]]:
        tokens: dict[str, list[Any]] = {}
        for t in access.store.list_tokens(None):
            tokens.setdefault(t.principal.name, []).append(t)
        out = []
        for r in access.store.list_principals("robot"):
            mine = tokens.get(r.name, [])
            out.append(
                {
                    "name": r.name,
                    "disabled": r.disabled,
                    "tokens": [
                        {
                            "id": t.id,
                            "scopes": orjson.loads(t.scopes) if t.scopes else [],
                            "expires_at": t.expires_at,
                            "revoked_at": t.revoked_at,
                        }
                        for t in mine
                    ],
                }
            )
        return out

    rows = await portal.run(load)
    status = 201 if created else 200
    return portal.render(request, "robots.html", viewer, status, robots=rows, off=False, created=created)


async def create_robot(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Create a robot and show its token once, on this response only."""
    from hallmark.access.store import Conflict
    from hallmark.portal.session import PortalFailure

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = portal.access(request)
    if access is None:
        raise PortalFailure(400, "Access control is off: there are no robots.")
    name = form.get("name", "").strip()[:64]
    scopes = [s for s in form.get("scopes", "").split() if s][:64]
    raw_days = form.get("expires_in_days", "").strip() or str(ROBOT_DAYS_DEFAULT)
    try:
        days = float(raw_days)
    except ValueError:
        raise PortalFailure(400, "Expiry must be a number of days.") from None
    if not name or not scopes or not 0 < days <= 3650:
        raise PortalFailure(400, "A robot needs a name, at least one scope and an expiry of 1 to 3650 days.")
    try:
        _, token = await portal.run(
            access.create_robot, viewer.name or "portal", name, scopes, days, client_addr(request)
        )
    except Conflict as exc:
        raise PortalFailure(409, f"A principal named {name} already exists; choose another name.") from exc
    except ValueError as exc:
        raise PortalFailure(400, f"{exc}.") from exc
    return await robots(portal, request, created={"name": name, "token": token})


async def revoke_robot(portal: Portal, request: web.Request) -> web.StreamResponse:
    from hallmark.access.store import NotFound
    from hallmark.portal.session import PortalFailure

    await portal.check_form(request)
    viewer = await portal.viewer(request)
    access = portal.access(request)
    if access is None:
        raise PortalFailure(400, "Access control is off: there are no robots.")
    name = request.match_info["robot"]
    try:
        await portal.run(access.revoke_robot, viewer.name or "portal", name, client_addr(request))
    except NotFound as exc:
        raise PortalFailure(404, f"No robot named {name}.") from exc
    return portal.redirect(request, "/admin/robots")


async def audit_log(portal: Portal, request: web.Request) -> web.StreamResponse:
    """The newest audit entries matching the filters (last 7 days unless ``since`` says otherwise),
    and on request the hash chain's verification, as ``/api/v1/audit`` and ``/api/v1/audit/verify``."""
    from hallmark.portal.session import PortalFailure

    viewer = await portal.viewer(request)
    access = portal.access(request)
    if access is None:
        return portal.render(request, "audit.html", viewer, off=True, rows=[], filters={}, verify=None, since="")
    q = request.query
    filters = {k: q.get(k, "").strip()[:128] for k in ("actor", "action", "repo") if q.get(k, "").strip()}
    raw_since = q.get("since", "").strip()
    try:
        since = dt.date.fromisoformat(raw_since) if raw_since else None
    except ValueError:
        raise PortalFailure(400, "Since must be a date (YYYY-MM-DD).") from None
    start = since or (dt.datetime.now(dt.UTC) - dt.timedelta(days=AUDIT_DEFAULT_DAYS)).date()
    start_at = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)

    def load() -> tuple[list[dict[str, Any]], Any]:
        access.audit.flush()
        rows = access.audit.query(
            actor=filters.get("actor"), action=filters.get("action"), repo=filters.get("repo"), since=start_at
        )
        verify = access.audit.verify() if q.get("verify") == "1" else None
        return rows[-AUDIT_ROWS:][::-1], verify

    rows, verify = await portal.run(load)
    for r in rows:
        r["time"] = dt.datetime.fromisoformat(r["time"])
        r["detail_text"] = orjson.dumps(r["detail"]).decode()[:300] if r["detail"] else ""
    return portal.render(
        request, "audit.html", viewer, off=False, rows=rows, filters=filters, verify=verify, since=start.isoformat()
    )

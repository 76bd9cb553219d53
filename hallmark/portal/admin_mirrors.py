"""Mirrors in the portal: the list with each mirror's last run, a mirror's page with its runs and
per-tag results, and a "Run now" form.

Same rule as ``/api/v1/mirrors``: the routes need a login, and a mirror exists for a viewer only
when they administer its destination repository (administrators see all); others get the not-found
page. The definitions and runs come from ``MirrorStore`` (read only here); "Run now" queues a run
with ``sync_jobs.queue_run`` exactly like ``POST /api/v1/mirrors/{id}/run`` and is audited
``mirror.run`` the same way. Source passwords are never shown (the store does not return them).
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING, Any

from hallmark.access.model import ADMIN
from hallmark.mirror.definitions import Mirror, MirrorStore
from hallmark.mirror.sync_jobs import queue_run
from hallmark.web.auth import client_addr
from hallmark.web.authz import LOGIN, route

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal
    from hallmark.portal.session import Viewer

LIST = "/admin/mirrors"
MIRROR = LIST + "/{id:[0-9]+}"
RUNS_SHOWN = 20


def _store(portal: Portal) -> MirrorStore:
    return MirrorStore(portal.hm.meta, portal.hm.config.data_path)


def _administers(viewer: Viewer, m: Mirror) -> bool:
    return viewer.perms is None or viewer.perms.can(m.destination, ADMIN)


def _times(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """ISO strings of the store's JSON form as datetimes, for the template's ``when`` filter."""
    for k in keys:
        if isinstance(doc.get(k), str):
            doc[k] = dt.datetime.fromisoformat(doc[k])
    return doc


def _run_view(r: dict[str, Any]) -> dict[str, Any]:
    return _times(dict(r), "created_at", "started_at", "finished_at", "next_retry_at")


def _schedule(m: Mirror) -> str:
    if m.cron:
        return f"cron {m.cron}"
    if m.interval_seconds:
        s = m.interval_seconds
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if s % size == 0:
                return f"every {s // size} {unit}"
        return f"every {s} s"
    return "manual only"


def mirror_view(m: Mirror) -> dict[str, Any]:
    doc = _times(m.to_json(), "next_run_at", "created_at")
    doc["schedule_text"] = _schedule(m)
    doc["direction"] = m.direction  # push: ``destination`` is the local repository, ``source`` the remote
    return doc


async def _mirror(portal: Portal, request: web.Request, viewer: Viewer) -> Mirror:
    from hallmark.portal.session import PortalFailure

    raw = request.match_info["id"]
    m = await portal.run(_store(portal).get, int(raw)) if len(raw) <= 18 else None
    if m is None or not _administers(viewer, m):
        raise PortalFailure(404, "No such mirror (or you do not administer its destination repository).")
    return m


async def mirrors(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Every mirror the viewer administers, with its last run's state and counts."""
    viewer = await portal.viewer(request)
    store = _store(portal)

    def load() -> list[dict[str, Any]]:
        out = []
        for m in store.all():
            if _administers(viewer, m):
                doc = mirror_view(m)
                runs = store.runs(m.id, 1)
                doc["last_run"] = _run_view(runs[0]) if runs else None
                out.append(doc)
        return out

    rows = await portal.run(load)
    return portal.render(request, "mirrors.html", viewer, mirrors=rows)


async def mirror(portal: Portal, request: web.Request) -> web.StreamResponse:
    """One mirror: definition, recent runs, and the per-tag results of the run picked (the newest
    by default, ``?run=ID`` for another)."""
    from hallmark.portal.session import PortalFailure

    viewer = await portal.viewer(request)
    m = await _mirror(portal, request, viewer)
    store = _store(portal)
    raw = request.query.get("run", "").strip()
    if raw and not raw.isdigit():
        raise PortalFailure(400, "run must be a run number from the list.")

    def load() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        runs = store.runs(m.id, RUNS_SHOWN)
        pick = int(raw) if raw else (runs[0]["id"] if runs else None)
        detail = store.run(pick) if pick is not None else None
        if detail is not None and detail["mirror_id"] != m.id:
            detail = None
        return runs, detail

    runs, detail = await portal.run(load)
    if raw and detail is None:
        raise PortalFailure(404, f"Mirror {m.name} has no run {raw}.")
    return portal.render(
        request,
        "mirror.html",
        viewer,
        mirror=mirror_view(m),
        runs=[_run_view(r) for r in runs],
        detail=_run_view(detail) if detail else None,
        queued=request.query.get("queued"),
    )


async def run_now(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Queue a manual run (one pending run per mirror: a second click joins the queued one)."""
    await portal.check_form(request)
    viewer = await portal.viewer(request)
    m = await _mirror(portal, request, viewer)
    run_id, created = await portal.run(queue_run, portal.hm, m, "manual")
    access = portal.access(request)
    if access is not None:
        await access.audit.record_durable(
            viewer.name or "portal",
            "mirror.run",
            repo=m.destination,
            digest=None,
            client_addr=client_addr(request),
            detail={"mirror": m.name, "run": run_id},
        )
    state = "new" if created else "joined"
    return portal.redirect(request, f"{LIST}/{m.id}?run={run_id}&queued={state}")


def routes(portal: Portal) -> list[web.RouteDef]:
    """Declared like ``/api/v1/mirrors`` (login; filtered to mirrors whose destination one administers)."""
    page = LOGIN.portal
    return [
        route("GET", LIST, portal.page(partial(mirrors, portal)), page),
        route("GET", MIRROR, portal.page(partial(mirror, portal)), page),
        route("POST", MIRROR + "/run", portal.page(partial(run_now, portal)), page),
    ]

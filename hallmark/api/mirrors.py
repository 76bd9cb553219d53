"""Repository mirrors: ``POST/GET /api/v1/mirrors``, ``GET/DELETE /api/v1/mirrors/{id}``,
``PATCH /api/v1/mirrors/{id}``, ``POST /api/v1/mirrors/{id}/run``, ``GET /api/v1/mirrors/{id}/runs``.

Creating a mirror needs admin on its destination repository (the ``destination`` body field);
administrators qualify. The other routes need a login, and a mirror exists for a caller only when
they administer its destination: others get 404, so neither the definition (source, user name,
filters) nor its runs leak. Source passwords are never returned (``has_password``).
Creation, changes, removal and manual runs are audited (``mirror.create``, ``mirror.update``,
``mirror.delete``, ``mirror.run``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from hallmark.api.common import ApiError, json_response
from hallmark.api.guards import actor, audit
from hallmark.mirror.definitions import Mirror, MirrorInputError, MirrorStore, validate
from hallmark.mirror.sync_jobs import install, queue_run
from hallmark.web.auth import ACCESS_KEY, api_permissions
from hallmark.web.authz import LOGIN, repo_in_body, route

MIRROR_PATH = "/api/v1/mirrors/{id:[0-9]+}"


def routes(hm: Any) -> list[web.RouteDef]:
    """The routes; also lets this process's pipeline workers run mirror jobs."""
    install(hm)
    store = MirrorStore(hm.meta, hm.config.data_path)

    async def run(fn: Any, *args: Any) -> Any:
        return await hm.registry.run(fn, *args)

    async def administers(request: web.Request, m: Mirror) -> bool:
        if ACCESS_KEY not in request.app:
            return True
        return (await api_permissions(request)).can(m.destination, "admin")

    async def mirror_of(request: web.Request) -> Mirror:
        m = await run(store.get, int(request.match_info["id"]))
        if m is None or not await administers(request, m):
            raise ApiError(404, "NOT_FOUND", "no such mirror")
        return m

    async def create(request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "INVALID_INPUT", "request body is not JSON") from exc
        if not isinstance(doc, dict):
            raise ApiError(400, "INVALID_INPUT", "request body must be a JSON object")
        try:
            values = validate(doc)
            m = await run(store.create, values, await actor(request))
        except MirrorInputError as exc:
            raise ApiError(400, "INVALID_INPUT", str(exc)) from exc
        await audit(request, "mirror.create", m.destination, None, {"mirror": m.name, "source": m.source})
        return json_response(m.to_json(), status=201)

    async def list_all(request: web.Request) -> web.Response:
        out = []
        for m in await run(store.all):
            if await administers(request, m):
                doc = m.to_json()
                runs = await run(store.runs, m.id, 1)
                doc["last_run"] = runs[0] if runs else None
                out.append(doc)
        return json_response({"mirrors": out})

    async def get_one(request: web.Request) -> web.Response:
        m = await mirror_of(request)
        doc = m.to_json()
        runs = await run(store.runs, m.id, 1)
        doc["last_run"] = await run(store.run, runs[0]["id"]) if runs else None
        return json_response(doc)

    async def change(request: web.Request) -> web.Response:
        m = await mirror_of(request)
        try:
            patch = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "INVALID_INPUT", "request body is not JSON") from exc
        if not isinstance(patch, dict):
            raise ApiError(400, "INVALID_INPUT", "request body must be a JSON object")
        try:
            changed = await run(store.update, m, patch)
        except MirrorInputError as exc:
            raise ApiError(400, "INVALID_INPUT", str(exc)) from exc
        fields = sorted(k for k in patch if k != "password") + (["password"] if "password" in patch else [])
        await audit(request, "mirror.update", m.destination, None, {"mirror": m.name, "fields": fields})
        return json_response(changed.to_json())

    async def remove(request: web.Request) -> web.Response:
        m = await mirror_of(request)
        await run(store.delete, m.id)
        await audit(request, "mirror.delete", m.destination, None, {"mirror": m.name})
        return web.Response(status=204)

    async def start(request: web.Request) -> web.Response:
        m = await mirror_of(request)
        run_id, created = await run(queue_run, hm, m, "manual")
        await audit(request, "mirror.run", m.destination, None, {"mirror": m.name, "run": run_id})
        doc = await run(store.run, run_id, False)
        return json_response(dict(doc or {}, queued=created), status=202)

    async def runs(request: web.Request) -> web.Response:
        m = await mirror_of(request)
        try:
            limit = max(1, min(int(request.query.get("limit", "20")), 200))
        except ValueError as exc:
            raise ApiError(400, "INVALID_INPUT", "limit must be an integer") from exc
        docs = await run(store.runs, m.id, limit)
        if request.query.get("tags") in ("1", "true"):
            docs = [await run(store.run, d["id"]) for d in docs]
        return json_response({"mirror": m.name, "runs": docs})

    return [
        route("POST", "/api/v1/mirrors", create, repo_in_body("admin", "destination", "repository")),
        route("GET", "/api/v1/mirrors", list_all, LOGIN),  # filtered: mirrors whose destination one administers
        route("GET", MIRROR_PATH, get_one, LOGIN),  # 404 unless admin on the destination
        route("PATCH", MIRROR_PATH, change, LOGIN),  # same; name and destination stay
        route("DELETE", MIRROR_PATH, remove, LOGIN),  # same
        route("POST", MIRROR_PATH + "/run", start, LOGIN),  # same
        route("GET", MIRROR_PATH + "/runs", runs, LOGIN),  # same
    ]

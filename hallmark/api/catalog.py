"""Catalog API: search, per-image entry, metadata changes and promotions (gates + approval stamp).

Handlers check their own permissions (the catalog prefix is in ``OWN_PREFIXES``; image sub-paths
pass the access middleware): reads need pull on the repository, metadata needs repository admin,
stage changes need the catalog role ``security_reviewer`` (administrator qualifies) plus pull.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from hallmark.access.http import ACCESS_KEY, api_identity, client_addr, require_identity
from hallmark.api.common import ApiError, json_response, parse_body
from hallmark.api.guards import guard_repo, guard_role, visible
from hallmark.catalog.service import CatalogError, CatalogService, GateFailed
from hallmark.digest import is_digest
from hallmark.pipeline.service import Pipeline
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService


class EntryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str | None = Field(default=None, max_length=128)
    owner_kind: Literal["team", "user"] | None = None
    description: str | None = Field(default=None, max_length=10_000)
    support_status: str | None = Field(default=None, max_length=1000)


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Literal["staging", "approved", "deprecated", "retired"]
    reason: str = Field(min_length=1, max_length=2000)
    force: StrictBool = False


def _image(request: web.Request) -> tuple[str, str]:
    name, digest = request.match_info["name"], request.match_info["digest"]
    if not valid_name(name) or not is_digest(digest):
        raise ApiError(400, "INVALID_INPUT", "invalid repository name or digest")
    return name, digest


async def _who(request: web.Request) -> str:
    if ACCESS_KEY not in request.app:
        return request.remote or "anonymous"
    return (await api_identity(request)).name


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    catalog = CatalogService(pipeline)
    image_path = "/api/v1/repositories/{name:[a-z0-9][a-z0-9._/-]*}/images/{digest:sha(?:256|512):[a-f0-9]+}/catalog"

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run(lambda: fn(*args, **kwargs))
        except GateFailed as exc:
            raise ApiError(exc.status, exc.code, str(exc), {"gates": [g.as_dict() for g in exc.gates]}) from exc
        except CatalogError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc

    async def search(request: web.Request) -> web.Response:
        if ACCESS_KEY in request.app:
            await require_identity(request)
        q = request.query
        entries = await call(catalog.search, q.get("stage") or None, q.get("q") or None, q.get("owner") or None)
        allowed = await visible(request, list({e["repository"] for e in entries}))
        return json_response({"images": [e for e in entries if e["repository"] in allowed]})

    async def get_entry(request: web.Request) -> web.Response:
        name, digest = _image(request)
        await guard_repo(request, name, "pull")
        return json_response(await call(catalog.entry, name, digest))

    async def patch_entry(request: web.Request) -> web.Response:
        name, digest = _image(request)
        await guard_repo(request, name, "admin")
        body = await parse_body(request, EntryPatch)
        values = body.model_dump(exclude_unset=True)
        entry = await call(catalog.update, name, digest, values)
        if ACCESS_KEY in request.app:
            request.app[ACCESS_KEY].audit.record(
                await _who(request),
                "catalog.update",
                name,
                digest,
                client_addr=client_addr(request),
                detail={"fields": sorted(values)},
            )
        return json_response(entry)

    async def promote(request: web.Request) -> web.Response:
        name, digest = _image(request)
        await guard_role(request, "security_reviewer")
        await guard_repo(request, name, "pull")
        body = await parse_body(request, PromoteIn)
        audit = request.app[ACCESS_KEY].audit if ACCESS_KEY in request.app else None
        result = await call(
            catalog.promote,
            name,
            digest,
            body.to,
            await _who(request),
            body.reason,
            force=body.force,
            audit=audit,
            client_addr=client_addr(request),
        )
        return json_response(result)

    return [
        web.get("/api/v1/catalog", search),
        web.get(image_path, get_entry),
        web.patch(image_path, patch_entry),
        web.post(image_path + "/promote", promote),
    ]

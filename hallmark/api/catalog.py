"""Catalog API: search, per-image entry, metadata changes and promotions (gates + approval stamp).

Declared per route: reads need pull on the repository, metadata needs repository admin, stage
changes need the catalog role ``security_reviewer`` (administrator qualifies) plus pull.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from hallmark.access.model import ADMIN, PULL, SECURITY_REVIEWER
from hallmark.api.common import IMAGE_PATH, ApiError, image_ref, json_response, parse_body
from hallmark.api.guards import actor, audit, visible
from hallmark.catalog.service import CatalogError, CatalogService, GateFailed
from hallmark.pipeline.service import Pipeline
from hallmark.registry.service import RegistryService
from hallmark.web.auth import ACCESS_KEY, client_addr
from hallmark.web.authz import LOGIN, repo, role, route


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
    # deprecated/retired: what to pull instead, repository@digest or repository:tag in this registry
    replacement: str | None = Field(default=None, min_length=1, max_length=400)


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    catalog = CatalogService(pipeline)
    image_path = IMAGE_PATH + "/catalog"

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run(lambda: fn(*args, **kwargs))
        except GateFailed as exc:
            raise ApiError(exc.status, exc.code, str(exc), {"gates": [g.as_dict() for g in exc.gates]}) from exc
        except CatalogError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc

    async def search(request: web.Request) -> web.Response:
        """Filters of hallmark.discovery.search (contents, advisory, stage, grade, OS, end of life,
        owner, KEV, fix, full text); ranked, then cut to what the caller may pull, then paged."""
        from hallmark.discovery import search as discovery

        try:
            query = discovery.make_query(dict(request.query))
        except discovery.SearchError as exc:
            raise ApiError(400, "INVALID_INPUT", str(exc)) from exc
        soon = pipeline.config.lifecycle.eol_soon_days
        found = await run(lambda: discovery.find(pipeline.meta, query, soon))
        allowed = await visible(request, list({r for r, _ in found.keys}))
        keys = [k for k in found.keys if k[0] in allowed]
        page = keys[query.offset : query.offset + query.limit]
        entries = await run(lambda: discovery.entries(pipeline.meta, page, found, soon))
        return json_response({"images": entries, "total": len(keys), "limit": query.limit, "offset": query.offset})

    async def get_entry(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        return json_response(await call(catalog.entry, name, digest))

    async def patch_entry(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        body = await parse_body(request, EntryPatch)
        values = body.model_dump(exclude_unset=True)
        entry = await call(catalog.update, name, digest, values)
        await audit(request, "catalog.update", name, digest, {"fields": sorted(values)})
        return json_response(entry)

    async def promote(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        body = await parse_body(request, PromoteIn)
        audit = request.app[ACCESS_KEY].audit if ACCESS_KEY in request.app else None
        result = await call(
            catalog.promote,
            name,
            digest,
            body.to,
            await actor(request),
            body.reason,
            force=body.force,
            audit=audit,
            client_addr=client_addr(request),
            replacement=body.replacement,
        )
        return json_response(result)

    return [
        route("GET", "/api/v1/catalog", search, LOGIN),
        route("GET", image_path, get_entry, repo(PULL)),
        route("PATCH", image_path, patch_entry, repo(ADMIN)),
        route("POST", image_path + "/promote", promote, role(SECURITY_REVIEWER, repo_action=PULL)),
    ]

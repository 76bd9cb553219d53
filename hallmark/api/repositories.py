"""Repository settings API (tag immutability, listing) and garbage collection."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictBool

from hallmark.access.model import ADMIN, PULL
from hallmark.api.common import ApiError, json_response, parse_body
from hallmark.api.guards import audit
from hallmark.config import Config
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService
from hallmark.web.auth import readable
from hallmark.web.authz import ANYONE, repo, role, route


class RepositoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    immutable_tags: StrictBool | None = None


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    return name


def routes(svc: RegistryService, config: Config | None = None) -> list[web.RouteDef]:
    async def list_repositories(request: web.Request) -> web.Response:
        names = readable(request, await svc.run(svc.meta.list_repositories, None, None))
        return json_response({"repositories": names})

    async def get_repository(request: web.Request) -> web.Response:
        info = await svc.run(svc.meta.repository_info, _name(request))
        if info is None:
            raise ApiError(404, "NAME_UNKNOWN", "repository not found")
        return json_response(info)

    async def patch_repository(request: web.Request) -> web.Response:
        name = _name(request)
        body = await parse_body(request, RepositoryPatch)
        if body.immutable_tags is not None:
            if not await svc.run(svc.meta.set_repository_options, name, body.immutable_tags):
                raise ApiError(404, "NAME_UNKNOWN", "repository not found")
            await audit(request, "repository.update", name, None, {"immutable_tags": body.immutable_tags})
        info = await svc.run(svc.meta.repository_info, name)
        if info is None:
            raise ApiError(404, "NAME_UNKNOWN", "repository not found")
        return json_response(info)

    async def garbage_collect(request: web.Request) -> web.Response:
        from hallmark.lifecycle.tags import gc_policy
        from hallmark.registry.gc import collect

        dry_run = request.query.get("dry_run", "0").lower() in ("1", "true", "yes")
        raw = request.query.get("grace_seconds", "3600")
        if not raw.isdigit():
            raise ApiError(400, "INVALID_INPUT", "grace_seconds must be a non-negative integer")
        # With the configuration, manifests that tags left more than a time-machine window ago go too.
        policy = await svc.run(gc_policy, svc.meta, config) if config is not None else None
        result = await svc.run(collect, svc.meta, svc.blobs, int(raw), dry_run, policy)
        if not dry_run:
            for repo_name, digest in result.manifests:
                svc.notify("delete", repo_name, digest)  # the pipeline drops their image rows
        detail: dict[str, object] = {
            "dry_run": dry_run,
            "deleted": len(result.deleted),
            "manifests": len(result.manifests),
        }
        await audit(request, "gc", None, None, detail)
        return json_response(result.as_dict())

    return [
        route("POST", "/api/v1/gc", garbage_collect, role()),
        route("GET", "/api/v1/repositories", list_repositories, ANYONE),
        route("GET", "/api/v1/repositories/{name:.+}", get_repository, repo(PULL)),
        route("PATCH", "/api/v1/repositories/{name:.+}", patch_repository, repo(ADMIN)),
    ]

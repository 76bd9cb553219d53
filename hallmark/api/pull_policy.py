"""Per-namespace pull policy for retired images: ``GET|PUT /api/v1/namespaces/{name}/lifecycle``.

``retired_pull`` is ``deny`` (403 ``DENIED`` naming the replacement) or ``warn`` (served with a
``Warning: 299`` header); ``null`` clears the namespace's own setting so it inherits (an outer
namespace's, then ``[lifecycle] retired_pull``). Reading needs a login, changing it the
administrator role; every change is audited (``namespace.lifecycle``).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from hallmark.api.common import ApiError, json_response, parse_body
from hallmark.api.guards import audit
from hallmark.config import LifecycleConfig
from hallmark.lifecycle.pull_policy import namespace_setting, retired_pull_for, set_namespace_setting
from hallmark.metadata.store import MetadataStore
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService
from hallmark.web.authz import LOGIN, role, route


class LifecycleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retired_pull: Literal["deny", "warn"] | None


def _namespace(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise ApiError(400, "INVALID_INPUT", f"invalid namespace name {name!r}")
    return name


def routes(meta: MetadataStore, cfg: LifecycleConfig, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    path = "/api/v1/namespaces/{name:[a-z0-9][a-z0-9._/-]*}/lifecycle"

    def document(name: str) -> dict[str, object]:
        # What a repository directly in the namespace gets, and where that comes from.
        effective, scope = retired_pull_for(meta, f"{name}/-", cfg.retired_pull)
        return {
            "namespace": name,
            "retired_pull": namespace_setting(meta, name),
            "effective": {"retired_pull": effective, "from": f"namespace {scope[1]}" if scope else "default"},
        }

    async def get_settings(request: web.Request) -> web.Response:
        return json_response(await run(document, _namespace(request)))

    async def put_settings(request: web.Request) -> web.Response:
        name = _namespace(request)
        body = await parse_body(request, LifecycleIn)
        previous = await run(set_namespace_setting, meta, name, body.retired_pull)
        await audit(
            request,
            "namespace.lifecycle",
            None,
            None,
            {"namespace": name, "retired_pull": body.retired_pull, "previous": previous},
        )
        return json_response(await run(document, name))

    return [
        route("GET", path, get_settings, LOGIN),
        route("PUT", path, put_settings, role()),
    ]

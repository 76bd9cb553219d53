"""``GET /api/v1/advisories/{id}``: one advisory with every affected image, the workloads running
one, fixed versions, KEV/EPSS and VEX decisions (hallmark.discovery.advisory).

Access: any signed-in reader; images (and the workloads and image-scoped VEX documents that
would name them) are limited to repositories the caller may pull, like the catalog list.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hallmark.api.common import ApiError, json_response
from hallmark.discovery.advisory import UnknownAdvisory, detail
from hallmark.pipeline.service import Pipeline
from hallmark.registry.service import RegistryService
from hallmark.web.auth import ACCESS_KEY, api_permissions
from hallmark.web.authz import LOGIN, route

MAX_ID = 128


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    async def get_advisory(request: web.Request) -> web.Response:
        advisory = request.match_info["id"].strip()
        if not advisory or len(advisory) > MAX_ID or any(c.isspace() for c in advisory):
            raise ApiError(400, "INVALID_INPUT", f"advisory id must be 1..{MAX_ID} characters without spaces")
        perms = await api_permissions(request) if ACCESS_KEY in request.app else None

        def visible(repo: str | None) -> bool:
            return perms is None or repo is None or perms.can(repo, "pull")

        def build() -> dict[str, Any]:
            from hallmark.pipeline.matching import active_index

            active = active_index(pipeline)
            return detail(pipeline.meta, advisory, active[1] if active else None, visible)

        try:
            doc = await registry.run(build)
        except UnknownAdvisory as exc:
            raise ApiError(404, "NOT_FOUND", str(exc)) from exc
        return json_response(doc)

    return [route("GET", "/api/v1/advisories/{id}", get_advisory, LOGIN)]

"""Explore API: ``GET /api/v1/explore`` over source repository -> commit -> run -> image -> workload.

Access: the ``security_reviewer`` or ``auditor`` role (``administrator`` qualifies). The answer
spans every repository and every cluster inventory, which no repository permission covers,
so it is not filtered per repository but refused to callers without one of these roles
(least privilege: the roles that already read findings and the audit trail across repositories).
"""

from __future__ import annotations

from aiohttp import web

from hallmark.access.model import AUDITOR, SECURITY_REVIEWER
from hallmark.api.common import ApiError, json_response
from hallmark.explore.filters import ExploreError, parse_filters
from hallmark.explore.query import explore
from hallmark.metadata.store import MetadataStore
from hallmark.registry.service import RegistryService
from hallmark.web.authz import role, route


def routes(meta: MetadataStore, registry: RegistryService) -> list[web.RouteDef]:
    async def get_explore(request: web.Request) -> web.Response:
        params: dict[str, str] = {}
        for key, value in request.query.items():
            if key in params:
                raise ApiError(400, "INVALID_FILTER", f"{key}: given twice (use one value; grade takes A,B,...)")
            params[key] = value
        try:
            filters = parse_filters(params)
        except ExploreError as exc:
            raise ApiError(400, "INVALID_FILTER", str(exc), {"field": exc.field}) from exc
        return json_response(await registry.run(explore, meta, filters))

    return [route("GET", "/api/v1/explore", get_explore, role(SECURITY_REVIEWER, AUDITOR))]

"""JSON helpers and input validation shared by API handlers."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from hallmark.digest import is_digest
from hallmark.registry.names import valid_name

M = TypeVar("M", bound=BaseModel)


class ApiError(web.HTTPException):
    """A JSON error ``{"error": {"code", "message"}}`` with the given status."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        self.status_code = status
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if detail is not None:
            body["error"]["detail"] = detail
        super().__init__(body=orjson.dumps(body), content_type="application/json")


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(doc, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z),
        content_type="application/json",
    )


async def parse_body(request: web.Request, model: type[M]) -> M:
    try:
        raw = await request.read()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise ApiError(400, "INVALID_INPUT", "request body is invalid", detail) from exc


# One image's sub-resources: /api/v1/repositories/<name>/images/<digest>[/...]
IMAGE_PATH = "/api/v1/repositories/{name:[a-z0-9][a-z0-9._/-]*}/images/{digest:sha(?:256|512):[a-f0-9]+}"


def image_ref(request: web.Request) -> tuple[str, str]:
    """The repository and digest of an ``IMAGE_PATH`` route, validated (400 with the field named)."""
    name, digest = request.match_info["name"], request.match_info["digest"]
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    if not is_digest(digest):
        raise ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
    return name, digest

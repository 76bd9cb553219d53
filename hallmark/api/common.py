"""JSON helpers and input validation shared by API handlers."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

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

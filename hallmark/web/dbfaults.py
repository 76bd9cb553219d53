"""A database that restarts or drops connections gives clients a retryable 503, not a 500 page.

While PostgreSQL restarts (a failover, an upgrade, a crash), requests that need it fail: they are
answered ``503`` with ``Retry-After`` and the error body of their API (OCI ``errors`` under ``/v2/``,
``{"error": ...}`` elsewhere), never a traceback or the database URL. Nothing else is needed to
recover: the engine checks each pooled connection before use (``pool_pre_ping`` in
:func:`hallmark.metadata.db.make_engine`) and replaces the dead ones, so the same process serves
again as soon as the database answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"
MESSAGE = "the database is unavailable (restarting or unreachable); retry shortly"


def is_unavailable(exc: BaseException) -> bool:
    """A lost or refused database connection (not a bad query, which stays a bug to see)."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def unavailable_response(path: str) -> web.Response:
    body: dict[str, object]
    if path.startswith("/v2/") or path == "/v2":
        body = {"errors": [{"code": "UNAVAILABLE", "message": MESSAGE, "detail": None}]}
        headers = {"Docker-Distribution-API-Version": "registry/2.0"}
    else:
        body = {"error": {"code": "UNAVAILABLE", "message": MESSAGE}}
        headers = {}
    return web.Response(
        status=503,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Retry-After": RETRY_AFTER_SECONDS, **headers},
    )


@web.middleware
async def database_faults(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        if not is_unavailable(exc):
            raise
        cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        log.warning("%s %s: database unavailable: %s", request.method, request.path, type(cause).__name__)
        return unavailable_response(request.path)


def install(app: web.Application) -> None:
    """Before the access-control middleware, which reads the database too."""
    app.middlewares.append(database_faults)

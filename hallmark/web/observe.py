"""Observability of the HTTP server: request ids, access lines and metrics, ``/metrics``, ``/readyz``.

- Every request gets an id: a well-formed incoming ``X-Request-Id`` is kept (a load balancer's or
  a client's), else one is made. It is answered in ``X-Request-Id``, put in every log line and
  audit entry written while the request is handled (:data:`hallmark.logs.REQUEST_ID`; executor
  threads inherit it through :class:`ContextExecutor`).
- The access logger runs when the last byte of an answer was sent: one log line per request
  (``hallmark.access``) and the request metrics, labelled with the route *template* (an aiohttp
  resource's canonical path or the registry's own route table), never the raw path, so repository
  names and digests cannot blow up the number of series.
- ``/metrics``: the Prometheus text format (:mod:`hallmark.metrics`). On the main port it needs an
  administrator when access control is on (it tells about repositories' traffic and queue sizes);
  ``[server] metrics_listen`` adds a separate plain listener that answers only ``/metrics`` without
  credentials, for a scraper inside the cluster network (as Harbor does). ``metrics = false``
  turns both off.
- ``/readyz``: 200 only when the database answers a query and the blob store answers
  :meth:`~hallmark.storage.base.BlobStore.ping`; else 503 naming what failed. ``/healthz`` stays a
  liveness check that touches neither (a database outage must not get every replica restarted).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from sqlalchemy import text

from hallmark import logs, metrics
from hallmark.registry import http as registry_http
from hallmark.web.authz import PUBLIC, role, route

if TYPE_CHECKING:
    from hallmark.app import Hallmark

log = logging.getLogger(__name__)
access_log = logging.getLogger("hallmark.access")

REQUEST_ID_KEY = "hallmark.request_id"
HEADER = "X-Request-Id"
READY_TIMEOUT_SECONDS = 5.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_GROUP_RE = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _template(pattern: re.Pattern[str]) -> str:
    """``^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$`` -> ``/v2/{name}/manifests/{ref}``."""
    out = _GROUP_RE.sub(r"{\1}", pattern.pattern).strip("^$")
    return out.replace("/?", "/") if out.endswith("/?") else out.replace("/?", "")


_REGISTRY_TEMPLATES = [(pattern, _template(pattern)) for pattern, _ in registry_http.ROUTES]


def route_label(request: BaseRequest) -> str:
    """The route template of a request: bounded, never a repository name or digest."""
    match_info = getattr(request, "match_info", None)
    if match_info is None or match_info.http_exception is not None:
        return "unmatched"
    if match_info.handler is registry_http.dispatch:
        for pattern, template in _REGISTRY_TEMPLATES:
            if pattern.match(request.path):
                return template
        return "/v2/unmatched"
    resource = match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


# -- request ids ------------------------------------------------------------------------------------------
@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give the request its id (in the context for logs and audit entries) before anything else runs."""
    incoming = request.headers.get(HEADER)
    request_id = incoming if logs.well_formed_request_id(incoming) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    token = logs.REQUEST_ID.set(request_id)
    try:
        return await handler(request)
    finally:
        logs.REQUEST_ID.reset(token)


async def _add_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names its request id (also error pages and streamed blobs)."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id:
        response.headers[HEADER] = request_id


class ContextExecutor(ThreadPoolExecutor):
    """The loop's default executor, running each call in a copy of the caller's context, so work a
    handler hands to a thread (``run_in_executor``) still knows its request id."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)


# -- access lines and request metrics -----------------------------------------------------------------------
class AccessLogger(AbstractAccessLogger):
    """Called by aiohttp after the answer was sent: one access line and the request metrics."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            label = route_label(request)
            bytes_in = request.content_length or request.content.total_bytes
            bytes_out = _bytes_out(request, response)
            metrics.observe_request(request.method, label, response.status, time, bytes_in, bytes_out)
            self.logger.info(
                "%s %s %s %d %.1fms",
                request.method,
                label,
                request.path if len(request.path) <= 512 else request.path[:512] + "...",
                response.status,
                time * 1000,
                extra={
                    "request_id": request.get(REQUEST_ID_KEY),
                    "method": request.method,
                    "route": label,
                    "path": request.path[:512],
                    "status": response.status,
                    "duration_ms": round(time * 1000, 3),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "client": request.remote,
                },
            )
        except Exception:  # an access line must never break serving
            log.exception("access logging failed")


def _bytes_out(request: BaseRequest, response: StreamResponse) -> int:
    """Body bytes of the answer: its Content-Length (blobs go out by sendfile, which aiohttp's writer
    does not count), else what the writer wrote (a chunked answer; its headers included)."""
    if request.method == "HEAD":
        return 0
    length = response.content_length
    return length if length is not None else response.body_length


# -- /metrics and /readyz ---------------------------------------------------------------------------------
def metrics_handler(hm: Hallmark) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.scrape, hm.meta)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    return handle


def _check_database(hm: Hallmark) -> None:
    with hm.meta.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _probe(name: str, check: Callable[[], None]) -> str | None:
    """None when the check passed within the timeout, else a short reason. The answer is public (probes
    send no credentials): it names the failing dependency and the error's kind; the full message (host
    names, bucket) goes to the server log only."""
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, check), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("readiness: %s did not answer within %g s", name, READY_TIMEOUT_SECONDS)
        return f"{name} did not answer within {READY_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        log.warning("readiness: %s check failed: %s: %s", name, type(exc).__name__, str(exc).splitlines()[:1])
        return f"{name} unreachable ({type(exc).__name__})"
    return None


def readyz_handler(hm: Hallmark) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        results = await asyncio.gather(
            _probe("database", lambda: _check_database(hm)), _probe("storage", hm.blobs.ping)
        )
        checks = {
            name: ({"status": "ok"} if reason is None else {"status": "failed", "error": reason})
            for name, reason in zip(("database", "storage"), results, strict=True)
        }
        failed = [name for name, reason in zip(("database", "storage"), results, strict=True) if reason is not None]
        body = {"status": "ok" if not failed else "unavailable", "failed": failed, "checks": checks}
        return web.Response(status=200 if not failed else 503, body=orjson.dumps(body), content_type="application/json")

    return handle


def install(app: web.Application, hm: Hallmark) -> None:
    """Request ids, /readyz and (unless ``[server] metrics = false``) /metrics for administrators."""
    app.middlewares.insert(0, request_context)
    app.on_response_prepare.append(_add_header)
    routes = [route("GET", "/readyz", readyz_handler(hm), PUBLIC)]
    if hm.config.server.metrics:
        routes.append(route("GET", "/metrics", metrics_handler(hm), role()))
    app.router.add_routes(routes)

    async def context_executor(app: web.Application) -> None:
        asyncio.get_running_loop().set_default_executor(ContextExecutor(thread_name_prefix="hallmark"))

    app.on_startup.insert(0, context_executor)  # before the background tasks start using the executor


def metrics_app(hm: Hallmark) -> web.Application:
    """The separate listener of ``[server] metrics_listen``: /metrics only, without credentials."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(hm))
    return app

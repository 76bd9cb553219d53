"""Slow clients: header, body and idle timeouts for the aiohttp server.

aiohttp closes a connection whose request head has not arrived when its keep-alive timer
runs out, but it has no limit on how long a request body may take: a client sending one
byte every few seconds keeps its connection, a descriptor and possibly a partial upload
forever. ``hallmark serve`` wraps every connection's aiohttp protocol in a
:class:`ConnectionWatchdog`, and :func:`middleware` tells it when a request starts and ends:

* head: the request line and headers must be complete within ``header_timeout_seconds``
  of the connection opening, or of the first byte of the next request on a kept-alive
  connection (the wait for that byte is the idle timeout, aiohttp's keep-alive timer);
* body: while the server waits for the body (it is incomplete and reading is not paused
  for back-pressure), it must keep the pace of :mod:`hallmark.bodyrate`. A slow body makes
  the handler's next read raise :class:`~hallmark.bodyrate.BodyTooSlow`, which the
  middleware answers with 408 on a connection that is then closed, so the handler's cleanup
  runs (a cut upload is discarded, never committed). Bodies the registry reads off the
  socket itself (large blobs) apply the same rule in the reading thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

from hallmark.bodyrate import BODY_LIMITS_KEY, BodyLimits, BodyRate, BodyTooSlow
from hallmark.config import ServerConfig

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class ReadTimeouts:
    header: float = 30.0
    body: BodyLimits = field(default_factory=BodyLimits)
    idle: float = 75.0

    @classmethod
    def from_config(cls, server: ServerConfig) -> ReadTimeouts:
        return cls(
            server.header_timeout_seconds,
            BodyLimits(server.body_timeout_seconds, server.body_min_rate_bytes_per_second),
            server.idle_timeout_seconds,
        )

    @property
    def tick(self) -> float:
        """How often a body's pace is checked."""
        return min(1.0, self.body.window / 4)


# The watchdog of each open connection of this process, found by the middleware from request.transport.
_WATCHDOGS: dict[asyncio.BaseTransport, ConnectionWatchdog] = {}


class ConnectionWatchdog(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's protocol and closes the connection when
    the client is too slow.

    One timer per connection, re-armed lazily: a request that starts before the head deadline
    does not cancel it, the timer just finds nothing to do when it fires.
    """

    def __init__(self, inner: asyncio.Protocol, timeouts: ReadTimeouts) -> None:
        self.inner = inner
        self.timeouts = timeouts
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_deadline: float | None = None  # set while a request head is awaited
        self._head_bytes = 0
        self._request: web.BaseRequest | None = None
        self._rate: BodyRate | None = None
        self._body_bytes = 0

    # -- asyncio.Protocol, forwarded -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's
        _WATCHDOGS[transport] = self
        self._head_deadline = self._loop.time() + self.timeouts.header
        self._arm(self._head_deadline)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._request is not None:
            self._body_bytes += len(data)
        else:
            self._head_bytes += len(data)
            if self._head_deadline is None:  # first byte of the next request on a kept-alive connection
                self._head_deadline = self._loop.time() + self.timeouts.header
                self._arm(self._head_deadline)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            _WATCHDOGS.pop(self._transport, None)
        self._request = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- request lifecycle (from the middleware) ------------------------------------------------------
    def request_started(self, request: web.BaseRequest) -> None:
        self._request = request
        self._head_deadline = None
        self._head_bytes = 0
        task = asyncio.current_task()
        if task is not None:  # aiohttp runs each request in its own task, which ends after the response
            task.add_done_callback(lambda _t: self._request_done(request))
        if not request.content.is_eof():
            self._rate = BodyRate(self.timeouts.body)
            self._body_bytes = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._arm(self._loop.time() + self.timeouts.tick)

    def _request_done(self, request: web.BaseRequest) -> None:
        if self._request is request:  # not a later pipelined request that already started
            self._request = None
            self._rate = None

    # -- the timer ------------------------------------------------------------------------------------
    def _arm(self, when: float) -> None:
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()
        request = self._request
        if request is None:
            if self._head_deadline is None:
                return  # idle between requests: aiohttp's keep-alive timer owns that
            if now < self._head_deadline:
                self._arm(self._head_deadline)
                return
            if self._head_bytes:
                transport.write(_REQUEST_TIMEOUT)
            transport.close()
            return
        rate = self._rate
        if rate is None or request.content.is_eof() or request.content.exception() is not None:
            return  # the whole body is in (or it was taken over by the raw reader): nothing to wait for
        got, self._body_bytes = self._body_bytes, 0
        # Time counts only while the server wants the body: reading paused means the server is behind.
        try:
            rate.add(self.timeouts.tick if transport.is_reading() else 0.0, got)
        except BodyTooSlow as exc:
            transport.pause_reading()
            request.content.set_exception(exc)
            return
        self._arm(now + self.timeouts.tick)


def protocol_factory(server: Callable[[], asyncio.Protocol], timeouts: ReadTimeouts) -> Callable[[], asyncio.Protocol]:
    """Wrap aiohttp's protocol factory (``AppRunner.server``) for ``loop.create_server``."""

    def make() -> asyncio.Protocol:
        return ConnectionWatchdog(server(), timeouts)

    return make


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tell the connection's watchdog a request started; answer a body that came too slowly with 408."""
    transport = request.transport
    watchdog = _WATCHDOGS.get(transport) if transport is not None else None
    if watchdog is not None:
        watchdog.request_started(request)
        request[BODY_LIMITS_KEY] = watchdog.timeouts.body
    try:
        return await handler(request)
    except BodyTooSlow as exc:
        resp = web.Response(status=408, text=f"{exc}\n")
        resp.force_close()
        return resp


def install(app: web.Application) -> None:
    """Put the middleware first, so it sees every request before anything reads a body."""
    app.middlewares.insert(0, middleware)

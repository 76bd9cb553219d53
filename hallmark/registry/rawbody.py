"""Large upload bodies read straight from the socket into page-aligned buffers.

Through aiohttp every body byte is copied twice in user space (uvloop's read buffer to
a ``bytes``, the HTTP parser's body slice to another ``bytes``) and then once more into
the aligned buffer the O_DIRECT writer needs: three copies of every GiB on a 2-core
machine that also has to hash it. For a plain-TCP request with a ``Content-Length`` of
at least :data:`RAW_MIN`, the handler instead pauses the transport, takes what the
parser already buffered, and lets a pool thread ``readv`` the rest directly into
aligned buffers that go to the writer without another copy.

The HTTP parser never sees those bytes, so the connection cannot carry another
request: the response says ``Connection: close`` and the server closes it. Clients
open a new connection for the next request, which costs nothing next to the body.

The event loop's slow-client watchdog cannot see these reads (the transport is paused),
so the pool thread enforces the same minimum body rate itself (:mod:`hallmark.bodyrate`),
counting only the time it spends waiting for the socket.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from aiohttp import web

from hallmark.bodyrate import BODY_LIMITS_KEY, BodyLimits, BodyRate
from hallmark.buffers import AlignedBuffers

RAW_MIN = 8 << 20
BUFFER = 8 << 20
RAW_KEY = "hallmark.raw_body"


_POOL = AlignedBuffers(BUFFER)


def _fill(fd: int, view: memoryview, want: int, rate: BodyRate) -> int:
    """Read exactly ``want`` bytes into ``view`` from a non-blocking socket; raises
    :class:`~hallmark.bodyrate.BodyTooSlow` when the client falls below the minimum rate."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got = 0
    while got < want:
        try:
            n = os.readv(fd, [view[got:want]])
        except BlockingIOError:
            t0 = time.monotonic()
            poller.poll(max(math.ceil(rate.time_left() * 1000), 1))
            rate.add(time.monotonic() - t0, 0)
            continue
        if n == 0:
            raise ConnectionResetError("client closed the connection during the upload")
        got += n
        rate.add(0.0, n)
    return got


class RawBody:
    """Async iterator over the body; the handler calls :meth:`release` once the upload returned.

    The buffers belong to this object until then: the consumer may still hold chunks
    (the last one, or one being written) after the iteration ended.
    """

    def __init__(
        self, fd: int, executor: Executor, head: list[bytes], remaining: int, limits: BodyLimits | None = None
    ) -> None:
        self._fd = fd
        self._executor = executor
        self._head = head
        self._remaining = remaining
        self._views: list[memoryview] = []
        self._rate = BodyRate(limits or BodyLimits())

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        head = b"".join(self._head)
        if len(head) >= BUFFER:
            yield head
            head = b""
        loop = asyncio.get_running_loop()
        # Two buffers: the consumer writes one while the next is filled. A chunk must be
        # written before the iterator is advanced twice more, which the upload pump
        # guarantees: it waits for each write before handing over the next chunk.
        # What the parser had buffered goes first into buffer 0, so every chunk is whole
        # pages at a page-aligned address and the writer can hand it to O_DIRECT as is.
        i = 0
        while self._remaining > 0 or head:
            if len(self._views) <= i:
                self._views.append(_POOL.take())
            view = self._views[i]
            start = len(head)
            if head:
                view[:start] = head
                head = b""
            want = min(self._remaining, BUFFER - start)
            got = (
                await loop.run_in_executor(self._executor, _fill, self._fd, view[start:], want, self._rate)
                if want
                else 0
            )
            self._remaining -= got
            yield view[: start + got]  # type: ignore[misc]
            i ^= 1

    def release(self) -> None:
        for v in self._views:
            _POOL.give(v)
        self._views = []


def raw_body(request: web.Request, executor: Executor, length: int | None) -> RawBody | None:
    """The body read off the socket, or None when this request is not eligible."""
    transport = request.transport
    if (
        length is None
        or length < RAW_MIN
        or transport is None
        or request.headers.get("Transfer-Encoding")
        or transport.get_extra_info("sslcontext") is not None
    ):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    # From here on nothing awaits until the parser's buffer is taken and the transport is
    # paused: no data can slip into aiohttp's payload behind our back. Pausing comes last
    # because aiohttp's stream resumes the transport both when drained and at EOF.
    content = request.content
    head: list[bytes] = []
    while chunk := content.read_nowait():
        head.append(chunk)
    content.feed_eof()  # aiohttp must not wait for (linger on) a body it will never see
    request.protocol.close()  # the parser lost track of this connection: close after the response
    transport.pause_reading()
    request[RAW_KEY] = True
    remaining = max(length - sum(len(h) for h in head), 0)
    return RawBody(sock.fileno(), executor, head, remaining, request.get(BODY_LIMITS_KEY))

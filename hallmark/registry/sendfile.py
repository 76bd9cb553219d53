"""Zero-copy blob serving with sendfile(2), also under uvloop.

aiohttp's FileResponse relies on ``loop.sendfile``, which uvloop does not
implement, so it silently falls back to reading the file through Python. This
response flushes the headers, then lets a pool thread call ``os.sendfile`` on
the connection's socket (waiting with poll() whenever the socket buffer is
full) while the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import Executor
from typing import IO, Any

from aiohttp import web

_STEP = 16 << 20


def _sendfile_all(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, min(count, _STEP))
        except BlockingIOError:
            if not poller.poll(30_000):
                raise ConnectionResetError("client stopped reading") from None
            continue
        if sent == 0:
            raise ConnectionResetError("connection closed during sendfile")
        offset += sent
        count -= sent


class SendfileResponse(web.FileResponse):
    def __init__(self, path: Any, executor: Executor, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._executor = executor

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int) -> Any:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or self.compression or transport is None:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        writer.send_headers()  # type: ignore[attr-defined]
        await writer.drain()
        # The headers must be on the wire before the body bytes go out of band.
        for _ in range(1000):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.001)
        else:
            return await super()._sendfile_fallback(writer, fobj, offset, count)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _sendfile_all, sock.fileno(), fobj.fileno(), offset, count)
        await web.StreamResponse.write_eof(self)
        return writer

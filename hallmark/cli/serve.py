"""``hallmark serve``: the registry, API and portal in one process (the embedded default)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import signal
import socket
from typing import Annotated

import typer
from aiohttp import web

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.config import Config, parse_listen
from hallmark.web.client import TRUSTED_PROXIES, TrustedProxies
from hallmark.web.timeouts import ReadTimeouts, protocol_factory
from hallmark.web.timeouts import install as install_timeouts


async def _serve(app: web.Application, config: Config, sock: socket.socket | None, announce: str | None) -> None:
    """Like ``web.run_app``, but every connection's protocol is wrapped in the slow-client watchdog
    (:mod:`hallmark.web.timeouts`); stops cleanly on SIGINT or SIGTERM."""
    server_cfg = config.server
    timeouts = ReadTimeouts.from_config(server_cfg)
    install_timeouts(app)
    if TRUSTED_PROXIES not in app:
        app[TRUSTED_PROXIES] = TrustedProxies.from_config(server_cfg)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=timeouts.idle, read_bufsize=1 << 22)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None
        factory = protocol_factory(runner.server, timeouts)
        if sock is not None:
            listener = await loop.create_server(factory, sock=sock)
        else:
            host, port = parse_listen(server_cfg.listen)
            listener = await loop.create_server(factory, host, port, reuse_port=False)
        if announce:
            print(announce, flush=True)
        await stop.wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()


def _run_worker(config: Config, sock: socket.socket | None, announce: bool) -> None:
    from hallmark.app import Hallmark, build_app

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    hm = Hallmark.open(config)
    host, port = parse_listen(config.server.listen)
    app = build_app(hm)
    shown = f"[{host}]" if ":" in host else host
    message = f"Hallmark serving registry, API and portal at http://{shown}:{port}/ (data: {config.data_path})"
    try:
        asyncio.run(_serve(app, config, sock, message if announce else None))
    finally:
        hm.close()


def serve(
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT (default 127.0.0.1:5000).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes sharing the port.")] = None,
) -> None:
    """Serve the registry, API and portal."""
    cfg = get_config(data_dir, config, server__listen=listen, server__workers=workers)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Migrate once before forking so workers never race on the schema.
    from hallmark.app import Hallmark

    Hallmark.open(cfg).close()
    host, port = parse_listen(cfg.server.listen)
    if cfg.server.workers == 1:
        _run_worker(cfg, None, True)
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker_main, args=(cfg, sock, i == 0)) for i in range(cfg.server.workers)]
    for p in procs:
        p.start()

    def stop(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        stop(signal.SIGINT, None)
        for p in procs:
            p.join(10)


def _worker_main(config: Config, sock: socket.socket, announce: bool) -> None:
    """A forked worker: dies with its parent, so no orphan keeps the port after a crash or kill -9."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM handler still stops us
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _run_worker(config, sock, announce)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

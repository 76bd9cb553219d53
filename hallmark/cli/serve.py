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
    if announce:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"Hallmark serving registry, API and portal at http://{shown}:{port}/ (data: {config.data_path})",
            flush=True,
        )
    try:
        web.run_app(
            app,
            sock=sock,
            host=None if sock else host,
            port=None if sock else port,
            access_log=None,
            print=None,
            reuse_port=False,
            read_bufsize=1 << 22,
        )
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

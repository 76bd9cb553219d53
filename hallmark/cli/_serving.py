"""What ``hallmark serve`` runs: the registry, API and portal in one process or several forked workers
sharing the port. Kept out of :mod:`hallmark.cli.serve`, whose import ``--help`` pays: aiohttp, the
configuration models and the database layer are imported here, only when the server starts."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
from pathlib import Path
from typing import NoReturn

import typer
from aiohttp import web

from hallmark import logs
from hallmark.cli._common import get_config
from hallmark.config import Config, ConfigError, parse_listen
from hallmark.metadata.db import DatabaseUnavailable
from hallmark.storage.base import StorageUnavailable
from hallmark.web.client import TRUSTED_PROXIES, TrustedProxies
from hallmark.web.timeouts import ReadTimeouts, protocol_factory
from hallmark.web.timeouts import install as install_timeouts
from hallmark.web.tls import TLSConfigError, TLSReloader


def _fail(message: str) -> NoReturn:
    """A start error is one line and exit code 2, like a configuration error (never a traceback)."""
    typer.echo(f"hallmark: {message}", err=True)
    raise typer.Exit(2)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(listen: str) -> socket.socket:
    """The listening socket, bound before anything else starts so a busy port fails the start at once;
    workers forked later share it."""
    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"cannot listen on {_shown(host, port)}: {exc.strerror}")
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        _fail(f"cannot listen on {_shown(host, port)}: {reason[:1].lower()}{reason[1:]}")
    sock.set_inheritable(True)
    return sock


async def _serve(
    app: web.Application,
    config: Config,
    sock: socket.socket,
    tls: TLSReloader | None,
    announce: str | None,
    metrics_site: tuple[web.Application, socket.socket] | None = None,
) -> None:
    """Like ``web.run_app``, but every connection's protocol is wrapped in the slow-client watchdog
    (:mod:`hallmark.web.timeouts`), over TLS when configured; stops cleanly on SIGINT or SIGTERM."""
    server_cfg = config.server
    timeouts = ReadTimeouts.from_config(server_cfg)
    install_timeouts(app)
    if TRUSTED_PROXIES not in app:
        app[TRUSTED_PROXIES] = TrustedProxies.from_config(server_cfg)
    from hallmark.web.observe import AccessLogger

    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("hallmark.access"),
        access_log_class=AccessLogger,  # access lines and request metrics, after the last byte was sent
        keepalive_timeout=timeouts.idle,
        read_bufsize=1 << 22,
    )
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    if metrics_site is not None:  # [server] metrics_listen: plain HTTP, /metrics only
        metrics_runner = web.AppRunner(metrics_site[0], access_log=None)
        await metrics_runner.setup()
        await web.SockSite(metrics_runner, metrics_site[1]).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None
        factory = protocol_factory(runner.server, timeouts)
        if tls is None:
            listener = await loop.create_server(factory, sock=sock)
        else:  # a handshake counts against the same budget as a request head
            listener = await loop.create_server(
                factory, sock=sock, ssl=tls.listener, ssl_handshake_timeout=timeouts.header
            )
        if announce:
            print(announce, flush=True)
        await stop.wait()
    finally:
        if listener is not None:
            listener.close()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


def _run_worker(
    config: Config,
    sock: socket.socket,
    tls: TLSReloader | None,
    announce: bool,
    metrics_sock: socket.socket | None = None,
    forked: bool = False,
) -> None:
    """One server process. ``forked``: a worker process, which dies with its parent, so no orphan
    keeps the port after a crash or kill -9."""
    if forked:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # not Linux: the parent's SIGTERM handler still stops us
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from hallmark.app import Hallmark, build_app
    from hallmark.web.observe import metrics_app

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    hm = Hallmark.open(config, run_migrations=False)  # serve() migrated before binding workers
    host, port = sock.getsockname()[:2]
    app = build_app(hm)
    scheme = "https" if tls is not None else "http"
    message = (
        f"Hallmark serving registry, API and portal at {scheme}://{_shown(host, port)}/ (data: {config.data_path})"
    )
    metrics_site = (metrics_app(hm), metrics_sock) if metrics_sock is not None else None
    try:
        asyncio.run(_serve(app, config, sock, tls, message if announce else None, metrics_site))
    finally:
        hm.close()


def start(listen: str | None, data_dir: str | None, config: str | None, workers: int | None) -> None:
    """``hallmark serve`` with its options."""
    cfg = get_config(data_dir, config, server__listen=listen, server__workers=workers)
    logs.setup(cfg.server.log_format, access_log=cfg.server.access_log)
    # Everything that can refuse the start is checked before "serving" is printed: TLS files, the port,
    # the database. Each failure is one line and exit code 2.
    try:
        tls = TLSReloader.from_config(cfg.server)
    except TLSConfigError as exc:
        _fail(str(exc))
    sock = bind(cfg.server.listen)
    metrics_sock = bind(cfg.server.metrics_listen) if cfg.server.metrics and cfg.server.metrics_listen else None
    # Counters of all workers add up in one per-run directory (hallmark.metrics), set before they fork.
    from hallmark import metrics

    try:
        metrics_dir: Path | None = metrics.use_directory()
    except OSError as exc:  # no writable temp folder (set TMPDIR): each worker then reports only itself
        logging.getLogger("hallmark").warning("metrics of several workers cannot be added up: %s", exc)
        metrics_dir = None
    try:
        _serve_workers(cfg, sock, tls, metrics_sock)
    finally:
        if metrics_dir is not None:
            metrics.remove_directory(metrics_dir)


def _serve_workers(
    cfg: Config, sock: socket.socket, tls: TLSReloader | None, metrics_sock: socket.socket | None
) -> None:
    # Migrate once before forking so workers never race on the schema.
    from hallmark.app import Hallmark

    try:
        hm = Hallmark.open(cfg)
        try:  # a missing bucket or refused credentials fail the start, not the first push
            hm.blobs.ping()
        finally:
            hm.close()
    except (DatabaseUnavailable, ConfigError, StorageUnavailable) as exc:
        sock.close()
        _fail(str(exc))
    if cfg.server.workers == 1:
        _run_worker(cfg, sock, tls, True, metrics_sock)
        return
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_run_worker, args=(cfg, sock, tls, i == 0, metrics_sock, True))
        for i in range(cfg.server.workers)
    ]
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

"""Running the pipeline: job threads inside ``hallmark serve``, or a standalone ``hallmark worker``.

Workers poll the shared job queue; a push in this process wakes them at once so
indexing starts without waiting for the next poll. Inside ``serve`` there are two lanes:
``pipeline.workers`` threads take every job for one time slice each, and ``index.large_workers``
threads take only index jobs that needed more (see :data:`hallmark.pipeline.service.INDEX_LARGE`),
so a hostile or huge image never holds up the indexing of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hallmark.pipeline.service import INDEX_LARGE, Pipeline

log = logging.getLogger(__name__)


def worker_name(i: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{i}"


class _Wakeup:
    """A threading.Event shared by the job threads, set whenever work is queued here."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> None:
        self.event.set()


def run_worker_loop(
    pipeline: Pipeline,
    name: str,
    stop: threading.Event,
    wake: threading.Event,
    kinds: Sequence[str] | None = None,
) -> None:
    while not stop.is_set():
        try:
            worked = pipeline.run_one(name, kinds)
        except Exception:
            log.exception("pipeline worker %s crashed on a job; continuing", name)
            worked = False
        if not worked:
            wake.wait(pipeline.config.pipeline.poll_seconds)
            wake.clear()


def registry_listener(
    pipeline: Pipeline, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor
) -> Callable[..., None]:
    def listener(event: str, repo: str, digest: str, tag: str | None) -> None:
        if event == "push":
            loop.run_in_executor(pool, pipeline.on_push, repo, digest)
        elif event == "delete":
            loop.run_in_executor(pool, pipeline.on_delete, repo, digest)

    return listener


def server_context(pipeline: Pipeline, registry: Any) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp cleanup context that runs the job threads for the life of the server."""

    async def ctx(app: Any) -> AsyncIterator[None]:
        cfg = pipeline.config.pipeline
        if not cfg.enabled:
            yield
            return
        loop = asyncio.get_running_loop()
        n = cfg.workers
        large = pipeline.config.index.large_workers if n else 0
        shared = pipeline.shared_kinds() if large else None  # None: every kind
        pool = ThreadPoolExecutor(max_workers=n + large + 2, thread_name_prefix="hallmark-job")
        stop = threading.Event()
        wake = _Wakeup()
        pipeline.wake = wake
        registry.listeners.append(registry_listener(pipeline, loop, pool))
        futures = [
            loop.run_in_executor(pool, run_worker_loop, pipeline, worker_name(i), stop, wake.event, shared)
            for i in range(n)
        ] + [
            loop.run_in_executor(pool, run_worker_loop, pipeline, worker_name(n + i), stop, wake.event, [INDEX_LARGE])
            for i in range(large)
        ]
        yield
        stop.set()
        wake()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        pool.shutdown(wait=False, cancel_futures=True)

    return ctx


def run_standalone(pipeline: Pipeline, threads: int, once: bool = False) -> int:
    """``hallmark worker``: run jobs until interrupted (or until the queue is empty with ``once``)."""
    if once:
        return pipeline.drain(worker_name(0))
    stop = threading.Event()
    wake = threading.Event()
    ts = [
        threading.Thread(target=run_worker_loop, args=(pipeline, worker_name(i), stop, wake), daemon=True)
        for i in range(threads)
    ]
    for t in ts:
        t.start()
    try:
        while any(t.is_alive() for t in ts):
            time.sleep(1)
    except KeyboardInterrupt:
        stop.set()
        wake.set()
    return 0

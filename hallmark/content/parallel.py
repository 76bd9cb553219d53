"""Content checks of a layer's files in worker processes, beside the process that reads the layer.

YARA (yara-x holds the GIL while it scans and while it loads compiled rules), hashing and the
secret rules are most of a first scan's time, and one process uses one core. ``ScanPool``
forks workers (sharing the rules loaded before the fork) that run ``ContentScanner.scan_file``
on files the reading process hands them; the reader goes on decompressing and indexing
meanwhile. A small file is read straight into a ring of memory shared with its worker
(:mod:`hallmark.content.ring`) and only its place is sent over the pipe, in batches. Files
over ``HOLD_BYTES`` go over the pipe in pieces as they are read.

A file's outcome does not depend on which process checked it (``scan_file`` keeps no state
between files), so results are the same as a scan in one process; they are handed back per
ticket, in the order the caller asks for them. A worker that dies or cannot be reached loses
no file: the small files it held are still in its ring and are checked in the calling process
instead, and one too big to keep a copy of makes ``result`` raise ``WorkerLost``. The bytes
held in flight are bounded by the ring (``max_inflight_bytes`` per worker), so a slow worker
holds the reader back rather than filling memory.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, cast

from hallmark.content.model import ScanOutcome
from hallmark.content.ring import Ring
from hallmark.content.scanner import ContentScanner

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BATCH_BYTES = 1 * MiB  # small files are announced to a worker together, up to about this many bytes of them
RESULT_BATCH = 16  # outcomes sent back together at most (so the reader's in-flight bytes free up)
STREAM_CHUNK = 1 * MiB  # a file over HOLD_BYTES goes to its worker in pieces of this size
HOLD_BYTES = 4 * MiB  # files up to this size go through a ring, kept until checked (here, should a worker fail)


def default_workers() -> int:
    """Worker processes for this machine: one beside the reading process, 0 on one core
    (checking in the reading process is as fast and uses less memory) and where processes
    cannot be forked (the workers share the loaded rules by forking). Since the YARA rules
    run in two stages (:mod:`hallmark.content.yara_stages`) the checks of a layer take less
    CPU than reading it: the reading process is the one that waits, and a second worker
    measured slower on 2 cores (docs/performance.md)."""
    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 1 if cores > 1 else 0


class WorkerLost(Exception):
    """A worker stopped while it held a file too big to keep a copy of here; the message names it."""


@dataclass(slots=True)
class _Task:
    ticket: int
    path: str
    layer_index: int | None
    layer_digest: str | None
    data: bytes | bytearray | None  # a copy to check here (no worker left); None: in ``span``, or a big file sent
    size: int | None
    mode: int | None
    nbytes: int = 0
    span: list[int] | None = None  # its bytes in the worker's ring


def _worker_main(
    tasks: Connection, results: Connection, make_scanner: Callable[[], ContentScanner], ring: Ring
) -> None:
    """Child: check every file sent until the task pipe closes. A message is a batch of small
    files (a pickled list of their places in ``ring``), or the header of one big file whose
    bytes follow in pieces. Outcomes go back in batches: when nothing more is waiting, or every
    ``RESULT_BATCH``."""
    scanner = make_scanner()
    done: list[tuple[int, ScanOutcome]] = []
    while True:
        try:
            if done and (len(done) >= RESULT_BATCH or not tasks.poll()):
                results.send_bytes(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
                done = []
                continue
            message = pickle.loads(tasks.recv_bytes())  # noqa: S301 - our parent, over a private pipe
            if isinstance(message, list):
                for ticket, path, layer_index, layer_digest, size, mode, span in message:
                    small = ring.read(span)
                    done.append((ticket, scanner.scan_file(path, layer_index, layer_digest, small, size, mode=mode)))
                continue
            ticket, path, layer_index, layer_digest, size, mode = message
            data = _receive_stream(tasks)
        except (EOFError, OSError):
            break
        done.append((ticket, scanner.scan_file(path, layer_index, layer_digest, data, size, mode=mode)))
    if done:
        results.send_bytes(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))


def _receive_stream(tasks: Connection) -> bytes | IO[bytes]:
    """A file sent in chunks: the chunks up to an empty message, then the read error if any
    (as a reader that raises it, so ``scan_file`` reports it as a reading scan does)."""
    buf = io.BytesIO()  # grows in place; getvalue() hands over its buffer without a copy
    while chunk := tasks.recv_bytes():
        buf.write(chunk)
    error = pickle.loads(tasks.recv_bytes())  # noqa: S301 - our parent
    return _failing(error) if error is not None else buf.getvalue()


class _Worker:
    """One child process, its pipes, its ring, and the thread that drains its results. Tasks are
    announced from the submitting thread, in batches: a sending thread woke up for every file
    and took the GIL from the reading thread each time."""

    def __init__(self, pool: ScanPool, process: Any, tasks: Connection, results: Connection, ring: Ring) -> None:
        self.pool = pool
        self.process = process
        self.ring = ring
        self.tasks = tasks
        self.results = results
        self.pending: dict[int, _Task] = {}  # announced or batched, no result yet
        self.batch: list[_Task] = []  # not announced yet
        self.batch_bytes = 0
        self.assigned = 0  # bytes ever given to it (work is spread by bytes)
        self.alive = True
        self.receiver = threading.Thread(target=self._receive, name="content-recv", daemon=True)

    def flush(self) -> None:
        """Announce the batched files (one message for many small files)."""
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        if not batch or not self.alive:
            return
        message = [(t.ticket, t.path, t.layer_index, t.layer_digest, t.size, t.mode, t.span) for t in batch]
        try:
            self.tasks.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            self.pool.lost(self)

    def _receive(self) -> None:
        while True:
            try:
                done = pickle.loads(self.results.recv_bytes())  # noqa: S301 - our own child
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            self.pool.done(self, done)
        self.pool.lost(self)  # a no-op once every pending file got its result


class ScanPool:
    """``submit`` files to worker processes, ``result`` their outcomes (in any order wanted).

    ``make_scanner`` runs in each worker (after fork: nothing is pickled; rules loaded before
    the pool is made are shared, not loaded again) and, should a worker fail, in this process
    for each file it held. Use as a context manager.
    """

    def __init__(
        self,
        make_scanner: Callable[[], ContentScanner],
        workers: int,
        *,
        max_inflight_bytes: int = 8 * MiB,
    ) -> None:
        if workers < 1:
            raise ValueError("ScanPool needs at least one worker")
        self._make_scanner = make_scanner
        self._cond = threading.Condition()
        self._outcomes: dict[int, ScanOutcome] = {}
        self._orphans: dict[int, _Task] = {}  # held by a worker that is gone: checked here
        self._next = 0
        ctx = multiprocessing.get_context("fork")
        pipes = [(ctx.Pipe(duplex=False), ctx.Pipe(duplex=False)) for _ in range(workers)]
        rings = [Ring(max(max_inflight_bytes, 2 * HOLD_BYTES)) for _ in range(workers)]
        for (_, task_w), _ in pipes:
            _widen(task_w)
        self._workers: list[_Worker] = []
        for ((task_r, task_w), (res_r, res_w)), ring in zip(pipes, rings, strict=True):
            process = ctx.Process(
                target=_child,
                args=(
                    task_r,
                    res_w,
                    make_scanner,
                    ring,
                    [c for pair in pipes for p in pair for c in p if c not in (task_r, res_w)],
                ),
                name="hallmark-content",
                daemon=True,
            )
            process.start()
            self._workers.append(_Worker(self, process, task_w, res_r, ring))
        for (task_r, _), (_, res_w) in pipes:  # the children's ends: EOF reaches us when a child dies
            task_r.close()
            res_w.close()
        for w in self._workers:  # threads only after every fork
            w.receiver.start()

    def __enter__(self) -> ScanPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        data: bytes | bytearray,
        size: int | None = None,
        *,
        mode: int | None = None,
    ) -> int:
        """Queue one file (its whole contents); returns the ticket that ``result`` takes."""
        if len(data) > HOLD_BYTES:
            return self.submit_stream(path, layer_index, layer_digest, io.BytesIO(data), size, mode=mode)
        return self._submit_ring(path, layer_index, layer_digest, io.BytesIO(data), len(data), size, mode)

    def submit_read(
        self,
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        stream: IO[bytes],
        size: int,
        *,
        mode: int | None = None,
    ) -> int:
        """Read a file of ``size`` bytes (at most ``HOLD_BYTES``) from ``stream`` straight into a
        worker's ring and queue it; returns the ticket. A stream that fails raises here, and
        nothing is queued."""
        if size > HOLD_BYTES:
            raise ValueError(f"submit_read takes files up to {HOLD_BYTES} bytes, not {size}")
        return self._submit_ring(path, layer_index, layer_digest, stream, size, size, mode)

    def _submit_ring(
        self,
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        stream: IO[bytes],
        nbytes: int,
        size: int | None,
        mode: int | None,
    ) -> int:
        """``nbytes`` from ``stream`` into a ring (``size`` is what the archive announced)."""
        with self._cond:
            worker, span = self._reserve(nbytes)
        if worker is None or span is None:  # no worker left: checked here, from a copy
            data = _read_all(stream, nbytes)
            return self._queue(None, _Task(-1, path, layer_index, layer_digest, data, size, mode, len(data)))
        try:
            n = _fill(stream, worker.ring.view(span))
            rest = stream.read() if n == nbytes else b""  # longer than announced: all of it, as scan_file reads
        except BaseException:
            with self._cond:
                worker.ring.free(span)
                self._cond.notify_all()
            raise
        if rest:  # never from a tar member (it ends at its size); over the pipe then
            data = worker.ring.read(span) + rest
            with self._cond:
                worker.ring.free(span)
                self._cond.notify_all()
            return self.submit_stream(path, layer_index, layer_digest, io.BytesIO(data), size, mode=mode)
        span[1] = span[0] + n  # a short stream: the bytes it had
        return self._queue(worker, _Task(-1, path, layer_index, layer_digest, None, size, mode, n, span))

    def _reserve(self, size: int) -> tuple[_Worker | None, list[int] | None]:
        """The least loaded live worker and a span of its ring (waits for room), or (None, None)."""
        while True:
            alive = [w for w in self._workers if w.alive]
            if not alive:
                return None, None
            worker = min(alive, key=lambda w: w.assigned)
            span = worker.ring.reserve(size)
            if span is not None:
                worker.assigned += size + 4096  # a file's fixed cost, in bytes
                return worker, span
            worker.flush()  # the ring is full of files it has not been told of yet, maybe
            self._cond.wait()

    def _queue(self, worker: _Worker | None, task: _Task) -> int:
        with self._cond:
            task.ticket = ticket = self._next
            self._next += 1
            if worker is None or not worker.alive:  # gone meanwhile: checked here
                if task.span is not None and worker is not None:
                    task.data = worker.ring.read(task.span)
                    worker.ring.free(task.span)
                    task.span = None
                self._orphans[ticket] = task
                self._cond.notify_all()
                return ticket
            worker.pending[ticket] = task
            worker.batch.append(task)
            worker.batch_bytes += task.nbytes
            idle = len(worker.pending) == len(worker.batch)  # it has checked all it was told of
        if idle or worker.batch_bytes >= BATCH_BYTES:
            worker.flush()
        return ticket

    def submit_stream(
        self,
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        stream: IO[bytes],
        size: int | None,
        *,
        mode: int | None = None,
    ) -> int:
        """Send a big file to a worker as it is read, in chunks (neither process holds it twice);
        returns the ticket. A worker lost meanwhile makes ``result`` raise ``WorkerLost``."""
        with self._cond:
            ticket = self._next
            self._next += 1
            task = _Task(ticket, path, layer_index, layer_digest, None, size, mode, size or 0)
            alive = [w for w in self._workers if w.alive]
            if not alive:
                self._orphans[ticket] = task
                return ticket
            worker = min(alive, key=lambda w: w.assigned)
            worker.assigned += (size or 0) + 4096
            worker.pending[ticket] = task
        worker.flush()  # the files before it, first
        header = (ticket, path, layer_index, layer_digest, size, mode)
        error: Exception | None = None
        try:
            worker.tasks.send_bytes(pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL))
            while True:
                try:
                    chunk = stream.read(STREAM_CHUNK)
                except Exception as exc:  # the layer stream failed: the worker reports it
                    error = exc
                    break
                if not chunk:
                    break
                worker.tasks.send_bytes(chunk)
            worker.tasks.send_bytes(b"")
            worker.tasks.send_bytes(_pickled_error(error))
        except (OSError, ValueError):
            self.lost(worker)
        return ticket

    def result(self, ticket: int) -> ScanOutcome:
        """The outcome of a submitted file (waits for it); each ticket can be taken once."""
        for w in self._workers:
            w.flush()
        with self._cond:
            while ticket not in self._outcomes and ticket not in self._orphans:
                self._cond.wait()
            outcome = self._outcomes.pop(ticket, None)
            task = self._orphans.pop(ticket, None) if outcome is None else None
        if task is not None:
            outcome = self._scan_here(task)
        assert outcome is not None
        return outcome

    def _scan_here(self, t: _Task) -> ScanOutcome:
        if t.data is None:
            raise WorkerLost(f"a content-check worker stopped while checking {t.path} ({t.nbytes} bytes)")
        scanner = self._make_scanner()  # made and dropped on this thread (yara-x scanners must be)
        return scanner.scan_file(t.path, t.layer_index, t.layer_digest, bytes(t.data), t.size, mode=t.mode)

    def done(self, worker: _Worker, items: list[tuple[int, ScanOutcome]]) -> None:
        with self._cond:
            for ticket, outcome in items:
                task = worker.pending.pop(ticket, None)
                if task is not None and task.span is not None:
                    worker.ring.free(task.span)
                self._outcomes[ticket] = outcome
            self._cond.notify_all()

    def lost(self, worker: _Worker) -> None:
        """A worker's pipe failed: what it held is checked in this process (``result`` raises
        ``WorkerLost`` for a file it held no copy of)."""
        with self._cond:
            if worker.alive and worker.pending:
                log.warning("content-check worker %s stopped; checking its files here", worker.process.pid)
            worker.alive = False
            for ticket, task in worker.pending.items():
                if task.span is not None:  # still in the ring: the copy to check here
                    task.data = worker.ring.read(task.span)
                    worker.ring.free(task.span)
                    task.span = None
                self._orphans[ticket] = task
            worker.pending.clear()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the workers (after their queued files) and wait for them."""
        for w in self._workers:
            w.flush()
            w.tasks.close()  # the worker sees EOF, finishes and exits
        for w in self._workers:
            w.receiver.join()
            w.results.close()
            w.process.join(timeout=5)
            if w.process.is_alive():  # pragma: no cover - a worker stuck in a scan
                w.process.kill()
                w.process.join()
            w.ring.close()


Slot = ScanOutcome | int  # an outcome, or a ScanPool ticket


class OrderedChecks:
    """A layer's file checks as one process would run them, in entry order, on a ``ScanPool``
    when there is one. Files whose tar size is over ``max_file_bytes`` stay here with the
    ``light`` scanner (secret rules and blocklist only): YARA and archives never see such a
    file (they need it in memory), so the full rules would change nothing for it."""

    def __init__(self, make_scanner: Callable[[], ContentScanner], light: ContentScanner, workers: int) -> None:
        self.light = light
        self.pool = ScanPool(make_scanner, workers) if workers > 0 else None
        self._local = None if self.pool is not None else make_scanner()

    def file(
        self,
        slots: list[Slot],
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        stream: IO[bytes],
        size: int | None,
        mode: int | None,
    ) -> None:
        """Check one regular file (``stream`` is read to its end here) into ``slots``."""
        if self._local is not None:
            slots.append(self._local.scan_file(path, layer_index, layer_digest, stream, size, mode=mode))
            return
        assert self.pool is not None
        if size is not None and size > self.light.options.max_file_bytes:
            slots.append(self.light.scan_file(path, layer_index, layer_digest, stream, size, mode=mode))
            return
        if size is not None and size > HOLD_BYTES:
            slots.append(self.pool.submit_stream(path, layer_index, layer_digest, stream, size, mode=mode))
            return
        try:
            if size is None or size < 0:
                data = _read_all(stream, size)
                slots.append(self.pool.submit(path, layer_index, layer_digest, data, size, mode=mode))
            else:
                slots.append(self.pool.submit_read(path, layer_index, layer_digest, stream, size, mode=mode))
        except Exception as exc:  # the same Skip a reading scan_file gives
            slots.append(self.light.scan_file(path, layer_index, layer_digest, _failing(exc), size, mode=mode))

    def outcome(self, slots: list[Slot]) -> ScanOutcome:
        """Every slot's outcome, merged in entry order."""
        out = ScanOutcome()
        for slot in slots:
            out.extend(slot if isinstance(slot, ScanOutcome) else self._pool().result(slot))
        return out

    def _pool(self) -> ScanPool:
        if self.pool is None:
            raise RuntimeError("OrderedChecks used after close()")
        return self.pool

    def close(self) -> None:
        """Stop the workers; drop the local scanner here (yara-x scanners must be dropped on
        the thread that made them, and garbage collection may run on another)."""
        self._local = None
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()


def _read_all(stream: IO[bytes], size: int | None) -> bytes:
    """The rest of ``stream``, read with its announced size (one buffer of that size; a plain
    ``read()`` would join chunks). ``bytes``, not a bytearray: the worker hands it to YARA,
    which takes only ``bytes``, so a bytearray would be copied once more there."""
    if not size or size < 0:
        return stream.read()
    data = stream.read(size)
    if len(data) == size and (rest := stream.read()):  # more than announced: keep it all, as a reading scan_file would
        data += rest
    return data


def _fill(stream: IO[bytes], view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends; the bytes read."""
    n = 0
    while n < len(view):
        got = stream.readinto(view[n:])  # type: ignore[attr-defined]
        if not got:
            break
        n += got
    return n


class _Failing(io.RawIOBase):
    """A reader that fails as the layer stream did."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        exc, self.exc = self.exc, OSError("read after a failed read")
        raise exc  # not kept here: its traceback's frames hold this reader (a cycle holding scanners)


def _widen(conn: Connection) -> None:
    """A task pipe as big as Linux allows an unprivileged process (1 MiB by default, not 64
    KiB): a batch is then one write, not sixteen, each of which has to win the GIL back from
    the reading thread before the next."""
    try:
        import fcntl

        size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), min(size, BATCH_BYTES * 2))
    except (OSError, ValueError, ImportError):  # not Linux, or a lower limit: the default size
        pass


def _pickled_error(error: Exception | None) -> bytes:
    try:
        return pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its type name and text
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"), protocol=pickle.HIGHEST_PROTOCOL)


def _failing(exc: Exception) -> IO[bytes]:
    return cast(IO[bytes], _Failing(exc))


def _child(
    tasks: Connection,
    results: Connection,
    make_scanner: Callable[[], ContentScanner],
    ring: Ring,
    others: list[Connection],
) -> None:
    for c in others:  # other workers' and the parent's ends: keep only ours
        c.close()
    # Ctrl-C reaches the whole process group: the scanning process stops the workers (closing
    # their pipes), so they print no traceback of their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_main(tasks, results, make_scanner, ring)


__all__ = ["OrderedChecks", "ScanPool", "Slot", "WorkerLost", "default_workers"]

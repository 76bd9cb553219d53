"""Prometheus metrics: what each process observes, plus what the database knows at scrape time.

Two kinds of numbers, chosen so ``hallmark serve --workers N`` (and several replicas) answer right:

- Event counters and histograms (requests, bytes, index and match durations, GC runs) are
  observed where they happen. ``hallmark serve`` runs prometheus-client in multiprocess mode
  with a per-run directory (:func:`use_directory`, set before the workers fork): each worker
  writes its own memory-mapped files, and a scrape answered by any worker adds up all of them.
  Counting in one process and reading from the others is what that mode is for; a per-process
  registry would make every scrape show one random worker's share.
- State (jobs queued/running/failed by kind, open upload sessions, the active advisory set's age,
  the last GC run) is read from the database by :class:`StateCollector` at scrape time: the
  database is the one place that knows it for all workers, replicas and ``hallmark worker``
  processes, and a gauge kept per process would need a "live" aggregation that multiprocess mode
  does badly (dead workers' values linger).

Label values are bounded: routes are templates (never a repository name or digest), job kinds
come from the code.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from hallmark.metadata.store import MetadataStore

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

# Created lazily (after use_directory), because a metric binds its storage when it is created.
_metrics: dict[str, Counter | Histogram] = {}


def use_directory(path: Path | None = None) -> Path:
    """Switch this process (and the workers it forks) to multiprocess mode; returns the directory.

    Call before any metric is touched. Without ``path`` a fresh temporary directory is made (one per
    ``hallmark serve`` run, so counters start at zero and nothing of a previous run is added in)."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="hallmark-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()
    _metrics.clear()
    return path


def remove_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _get(name: str) -> Counter | Histogram:
    metric = _metrics.get(name)
    if metric is None:
        metric = _metrics[name] = _make(name)
    return metric


def _counter(name: str) -> Counter:
    metric = _get(name)
    assert isinstance(metric, Counter)
    return metric


def _histogram(name: str) -> Histogram:
    metric = _get(name)
    assert isinstance(metric, Histogram)
    return metric


def _make(name: str) -> Counter | Histogram:
    registry = None  # never the global default registry: the scrape builds its own (see scrape())
    if name == "requests":
        return Counter(
            "hallmark_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
        )
    if name == "latency":
        return Histogram(
            "hallmark_http_request_duration_seconds",
            "Time from request to the last byte of the answer",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
    if name == "bytes_in":
        return Counter("hallmark_http_request_bytes", "Request body bytes received", ["route"], registry=registry)
    if name == "bytes_out":
        return Counter("hallmark_http_response_bytes", "Response body bytes sent", ["route"], registry=registry)
    if name == "index":
        return Histogram(
            "hallmark_index_duration_seconds",
            "Indexing (SBOM) of one image by the pipeline",
            ["lane", "result"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
    if name == "match":
        return Histogram(
            "hallmark_match_duration_seconds",
            "Matching one image's inventory against the active advisory set",
            ["result"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
    if name == "gc":
        return Counter("hallmark_gc_runs", "Garbage collections run by this server", ["result"], registry=registry)
    raise KeyError(name)


def observe_request(method: str, route: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
    _counter("requests").labels(method, route, str(status)).inc()
    _histogram("latency").labels(method, route).observe(seconds)
    if bytes_in:
        _counter("bytes_in").labels(route).inc(bytes_in)
    if bytes_out:
        _counter("bytes_out").labels(route).inc(bytes_out)


def observe_job(kind: str, seconds: float, ok: bool) -> None:
    """A pipeline job finished; index and match jobs feed their duration histograms."""
    result = "ok" if ok else "failed"
    if kind in ("index", "index-large"):
        _histogram("index").labels("large" if kind == "index-large" else "shared", result).observe(seconds)
    elif kind == "match":
        _histogram("match").labels(result).observe(seconds)


def observe_gc(ok: bool) -> None:
    _counter("gc").labels("ok" if ok else "failed").inc()


class StateCollector(Collector):
    """Gauges read from the database at scrape time (the same answer from every worker and replica)."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def collect(self) -> Iterator[Metric]:
        from hallmark.lifecycle.tables import scheduled_jobs
        from hallmark.metadata.tables import uploads
        from hallmark.pipeline.tables import advisory_sets, jobs

        now = dt.datetime.now(dt.UTC)
        with self.meta.engine.connect() as conn:
            job_rows = conn.execute(
                select(jobs.c.kind, jobs.c.state, func.count())
                .where(jobs.c.state.in_(("queued", "running", "failed")))
                .group_by(jobs.c.kind, jobs.c.state)
            ).all()
            open_uploads = conn.execute(select(func.count()).where(uploads.c.closed.is_(False))).scalar_one()
            active = conn.execute(
                select(advisory_sets.c.created_at).where(advisory_sets.c.active.is_(True)).limit(1)
            ).scalar_one_or_none()
            gc_row = conn.execute(
                select(scheduled_jobs.c.last_finished_at, scheduled_jobs.c.last_status).where(
                    scheduled_jobs.c.name == "gc"
                )
            ).first()
        family = GaugeMetricFamily("hallmark_jobs", "Pipeline jobs by kind and state", labels=["kind", "state"])
        for kind, state, count in job_rows:
            family.add_metric([kind, state], count)
        yield family
        yield GaugeMetricFamily("hallmark_upload_sessions", "Open chunked upload sessions", value=open_uploads)
        if active is not None:
            age = (now - _aware(active)).total_seconds()
            yield GaugeMetricFamily(
                "hallmark_advisory_set_age_seconds", "Age of the active advisory set", value=max(age, 0.0)
            )
        if gc_row is not None and gc_row[0] is not None:
            last = GaugeMetricFamily(
                "hallmark_gc_last_run_timestamp_seconds",
                "When the last scheduled garbage collection finished (Unix time)",
                labels=["status"],
            )
            last.add_metric([gc_row[1] or "unknown"], _aware(gc_row[0]).timestamp())
            yield last


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def scrape(meta: MetadataStore) -> bytes:
    """The Prometheus text exposition: every process's counters (multiprocess mode) plus the state."""
    registry = CollectorRegistry()
    _fill(registry, meta)
    return generate_latest(registry)


def _fill(registry: CollectorRegistry, meta: MetadataStore) -> None:
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:  # a process not started by `hallmark serve` (`hallmark worker`, tests): its own counters
        for name in ("requests", "latency", "bytes_in", "bytes_out", "index", "match", "gc"):
            registry.register(_get(name))
    registry.register(StateCollector(meta))


class _ScrapeRegistry(CollectorRegistry):
    """What :func:`scrape` answers, for prometheus-client's own HTTP server."""

    def __init__(self, meta: MetadataStore) -> None:
        super().__init__(auto_describe=False)
        self.meta = meta

    def collect(self) -> Iterator[Metric]:
        registry = CollectorRegistry()
        _fill(registry, self.meta)
        yield from registry.collect()


def serve_in_thread(listen: str, meta: MetadataStore) -> None:
    """``hallmark worker --metrics-listen``: /metrics on a daemon thread (the worker has no web server)."""
    from prometheus_client import start_http_server

    from hallmark.config import parse_listen

    host, port = parse_listen(listen)
    start_http_server(port, addr=host, registry=_ScrapeRegistry(meta))

"""One scheduler for every periodic job, safe with any number of workers and replicas.

Each job is a row of ``scheduled_jobs``. A worker claims a due job with one conditional
UPDATE (due, and not claimed or its claim expired): the database decides, so two workers
never run the same job at once, on SQLite or PostgreSQL, without a lock service. A claim is
a lease: a worker killed mid-job leaves a claim that expires and the job runs again.
Jobs are registered in :mod:`hallmark.lifecycle.jobs`; ``hallmark serve`` runs the loop
(``[lifecycle] scheduler``), ``hallmark worker`` can too, and ``hallmark lifecycle run``
runs every due job once, now.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from hallmark.config import Config
from hallmark.lifecycle.tables import scheduled_jobs
from hallmark.metadata.store import MetadataStore, utcnow

log = logging.getLogger(__name__)


class JobContext(Protocol):
    """What a periodic job may use (``hallmark.app.Hallmark`` satisfies it)."""

    config: Config
    meta: MetadataStore
    blobs: Any
    registry: Any
    pipeline: Any


@dataclass(frozen=True)
class PeriodicJob:
    """``interval`` gives seconds from the config; None or <= 0 turns the job off."""

    name: str
    interval: Callable[[Config], float | None]
    run: Callable[[JobContext], dict[str, Any]]


JOBS: dict[str, PeriodicJob] = {}


def register(job: PeriodicJob) -> PeriodicJob:
    if job.name in JOBS and JOBS[job.name] is not job:
        raise ValueError(f"two periodic jobs named {job.name!r}")
    JOBS[job.name] = job
    return job


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(self, meta: MetadataStore, owner: str | None = None, lease_seconds: float = 6 * 3600) -> None:
        self.meta = meta
        self.owner = owner or owner_name()
        self.lease = dt.timedelta(seconds=lease_seconds)

    def ensure(self, name: str, first_run: dt.datetime) -> None:
        """Create the job's row if missing (first run at ``first_run``)."""
        with self.meta.engine.connect() as conn:
            if conn.execute(select(scheduled_jobs.c.name).where(scheduled_jobs.c.name == name)).first():
                return
        try:
            with self.meta.transaction() as conn:
                conn.execute(scheduled_jobs.insert().values(name=name, next_run_at=first_run))
        except IntegrityError:
            pass  # another worker created it first

    def claim(self, name: str, now: dt.datetime, force: bool = False) -> bool:
        """Take the job if it is due (or ``force``) and nobody holds a live claim; True when taken."""
        cond = [
            scheduled_jobs.c.name == name,
            or_(scheduled_jobs.c.claimed_until.is_(None), scheduled_jobs.c.claimed_until < now),
        ]
        if not force:
            cond.append(scheduled_jobs.c.next_run_at <= now)
        with self.meta.transaction() as conn:
            res = conn.execute(
                update(scheduled_jobs)
                .where(and_(*cond))
                .values(claimed_by=self.owner, claimed_until=now + self.lease, last_started_at=now)
            )
            return res.rowcount == 1

    def finish(self, name: str, status: str, detail: Any, next_run: dt.datetime) -> None:
        with self.meta.transaction() as conn:
            conn.execute(
                update(scheduled_jobs)
                .where(scheduled_jobs.c.name == name, scheduled_jobs.c.claimed_by == self.owner)
                .values(
                    claimed_by=None,
                    claimed_until=None,
                    last_finished_at=utcnow(),
                    last_status=status,
                    last_detail=orjson.dumps(detail, default=str).decode(),
                    next_run_at=next_run,
                )
            )

    def status(self) -> list[dict[str, Any]]:
        with self.meta.engine.connect() as conn:
            rows = conn.execute(select(scheduled_jobs).order_by(scheduled_jobs.c.name)).mappings().all()
        out = []
        for r in rows:
            doc = dict(r)
            doc["last_detail"] = orjson.loads(r["last_detail"]) if r["last_detail"] else None
            out.append(doc)
        return out

    def run_due(
        self, ctx: JobContext, now: dt.datetime | None = None, force: bool = False, only: set[str] | None = None
    ) -> list[dict[str, Any]]:
        """Run every due job this worker can claim; ``force`` runs them whether due or not."""
        now = now or utcnow()
        results = []
        for job in list(JOBS.values()):
            if only is not None and job.name not in only:
                continue
            seconds = job.interval(ctx.config)
            if not seconds or seconds <= 0:
                continue
            every = dt.timedelta(seconds=seconds)
            self.ensure(job.name, now + every)
            if not self.claim(job.name, now, force=force):
                continue
            started = time.monotonic()
            try:
                detail = job.run(ctx)
                status = "ok"
            except Exception as exc:
                log.exception("periodic job %s failed", job.name)
                detail, status = {"error": f"{type(exc).__name__}: {exc}"[:2000]}, "failed"
            self.finish(job.name, status, detail, utcnow() + every)
            results.append(
                {"job": job.name, "status": status, "seconds": round(time.monotonic() - started, 3), "detail": detail}
            )
        return results

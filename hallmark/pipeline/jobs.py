"""A job queue in the metadata database, so API replicas and scan workers share it with no extra service.

Claiming is a lease: a worker that dies mid-job loses its lease and another
worker picks the job up after ``lease_seconds``. PostgreSQL claims with
``FOR UPDATE SKIP LOCKED``; SQLite has one writer at a time, so a plain
conditional update is enough there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, update

from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.pipeline.tables import jobs


@dataclass
class Job:
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    attempts: int


class JobQueue:
    def __init__(self, meta: MetadataStore, max_attempts: int = 5) -> None:
        self.meta = meta
        self.max_attempts = max_attempts

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], delay: float = 0.0) -> bool:
        """Add a job unless an identical one (kind, key) is already waiting; True when added."""
        now = utcnow()
        with self.meta.transaction() as conn:
            waiting = conn.execute(
                select(jobs.c.id).where(jobs.c.kind == kind, jobs.c.key == key, jobs.c.state == "queued")
            ).first()
            if waiting:
                return False
            conn.execute(
                jobs.insert().values(
                    kind=kind,
                    key=key,
                    payload=orjson.dumps(payload).decode(),
                    state="queued",
                    attempts=0,
                    run_after=now + dt.timedelta(seconds=delay),
                    created_at=now,
                    updated_at=now,
                )
            )
            return True

    def claim(
        self,
        worker: str,
        kinds: list[str] | None = None,
        lease_seconds: int = 600,
        lease_by_kind: Mapping[str, int] | None = None,
    ) -> Job | None:
        """Take the next ready job for ``lease_seconds`` (``lease_by_kind`` for kinds that run longer)."""
        now = utcnow()
        ready = or_(
            and_(jobs.c.state == "queued", jobs.c.run_after <= now),
            and_(jobs.c.state == "running", jobs.c.locked_until < now),
        )
        q = select(jobs.c.id, jobs.c.kind, jobs.c.key, jobs.c.payload, jobs.c.attempts).where(ready)
        if kinds:
            q = q.where(jobs.c.kind.in_(kinds))
        q = q.order_by(jobs.c.run_after, jobs.c.id).limit(1)
        if self.meta.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self.meta.transaction() as conn:
            row = conn.execute(q).first()
            if row is None:
                return None
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == row.id, ready)
                .values(
                    state="running",
                    locked_by=worker,
                    locked_until=now + dt.timedelta(seconds=(lease_by_kind or {}).get(row.kind, lease_seconds)),
                    attempts=row.attempts + 1,
                    updated_at=now,
                )
            )
            if res.rowcount != 1:
                return None
        return Job(row.id, row.kind, row.key, orjson.loads(row.payload), row.attempts + 1)

    def done(self, job: Job) -> None:
        with self.meta.transaction() as conn:
            conn.execute(
                update(jobs).where(jobs.c.id == job.id).values(state="done", locked_until=None, updated_at=utcnow())
            )

    def failed(self, job: Job, error: str) -> None:
        """Retry with exponential backoff until ``max_attempts``, then park the job as failed."""
        now = utcnow()
        final = job.attempts >= self.max_attempts
        values: dict[str, Any] = {"error": error[:4000], "locked_until": None, "updated_at": now}
        if final:
            values["state"] = "failed"
        else:
            values["state"] = "queued"
            values["run_after"] = now + dt.timedelta(seconds=min(2**job.attempts, 300))
        with self.meta.transaction() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))

    def pending(self, kinds: list[str] | None = None) -> int:
        q = select(jobs.c.id).where(jobs.c.state.in_(["queued", "running"]))
        if kinds:
            q = q.where(jobs.c.kind.in_(kinds))
        with self.meta.engine.connect() as conn:
            return len(conn.execute(q).all())

    def purge_done(self, older_than: dt.datetime) -> int:
        with self.meta.transaction() as conn:
            return conn.execute(jobs.delete().where(jobs.c.state == "done", jobs.c.updated_at < older_than)).rowcount

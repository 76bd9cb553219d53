"""Mirror runs as jobs: queued in the shared ``jobs`` table, run by any worker, scheduled periodically.

A run is a ``mirror_runs`` row plus one ``mirror`` job naming it; any pipeline worker (in
``hallmark serve`` or ``hallmark worker``) that has the handler installed claims and runs it. A
crashed worker's lease expires and another resumes the same run (per-tag rows say what is done).
A run with failed tags is queued again with backoff until ``MAX_ATTEMPTS``. The periodic job
``mirrors.schedule`` (the lifecycle scheduler, claimed once across replicas) queues due mirrors.

Push mirrors also run on events: an approval queues a run of every push mirror of the repository;
with ``delete_remote``, so do a retirement and a tag or manifest deleted here (through the registry
API at once; any other removal, such as retention or tag expiry, is seen in the tag history by
``mirrors.schedule``). The run, not the request, talks to the remote.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, update

from hallmark.access.model import Identity
from hallmark.lifecycle.scheduler import JobContext, PeriodicJob, register
from hallmark.lifecycle.tables import tag_history
from hallmark.metadata.store import utcnow
from hallmark.metadata.tables import repo_blobs, repositories
from hallmark.mirror.definitions import Mirror, MirrorStore
from hallmark.mirror.sync import MirrorError, Target, execute, retry_delay
from hallmark.mirror.tables import mirror_runs, mirrors
from hallmark.pipeline.tables import jobs

log = logging.getLogger(__name__)

KIND = "mirror"
LEASE_SECONDS = 600
ACTIVE = ("queued", "running", "retrying")
FINISHED = ("succeeded", "partial", "failed")
# Runs queued by something that happened here; one already running may have passed what happened.
EVENT_TRIGGERS = ("approval", "retirement", "deletion")


def job_key(mirror_id: int, run_id: int) -> str:
    """One job per run: a run queued while another's retry waits must get its own job, not be
    folded into that one (the jobs queue keeps one waiting job per key)."""
    return f"mirror-{mirror_id}-run-{run_id}"


def store_of(ctx: Any) -> MirrorStore:
    return MirrorStore(ctx.meta, ctx.config.data_path)


def queue_run(ctx: Any, m: Mirror, trigger: str, enqueue: bool = True) -> tuple[int, bool]:
    """Queue a run of ``m`` unless one is already queued or running; returns (run id, created).

    ``enqueue=False`` records the run without a job, for a caller that runs it itself (the CLI).
    An event run (approval, retirement, deletion) only joins a run still queued: one already running
    may have passed the tag."""
    now = utcnow()
    waiting = ("queued",) if trigger in EVENT_TRIGGERS else ACTIVE
    with ctx.meta.transaction() as conn:
        active = conn.execute(
            select(mirror_runs.c.id).where(mirror_runs.c.mirror_id == m.id, mirror_runs.c.state.in_(waiting))
        ).first()
        if active:
            return int(active.id), False
        res = conn.execute(
            mirror_runs.insert().values(
                mirror_id=m.id,
                trigger=trigger,
                state="queued",
                attempt=0,
                copied=0,
                skipped=0,
                failed=0,
                bytes=0,
                blobs_copied=0,
                blobs_skipped=0,
                created_at=now,
            )
        )
        assert res.inserted_primary_key is not None
        run_id = res.inserted_primary_key[0]
    if enqueue:
        ctx.pipeline.jobs.enqueue(KIND, job_key(m.id, int(run_id)), {"mirror": m.id, "run": int(run_id)})
        ctx.pipeline.wake()
    return int(run_id), True


def access_of(ctx: Any) -> Any:
    """The access service (robot checks, audit): the server's, or one on the same database for a
    standalone worker or the CLI; None when access control is off."""
    if not ctx.config.access.enabled:
        return None
    if getattr(ctx, "access", None) is None:
        from hallmark.access.service import AccessService

        ctx.access = AccessService.for_metadata(ctx.config, ctx.meta)
    return ctx.access


def target_for(ctx: Any, m: Mirror, run_id: int) -> Target:
    """The destination side: registry stores, the pipeline's push hook, audit and the robot check."""
    access = access_of(ctx)
    key = job_key(m.id, run_id)

    def heartbeat() -> None:
        with ctx.meta.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.kind == KIND, jobs.c.key == key, jobs.c.state == "running")
                .values(locked_until=utcnow() + dt.timedelta(seconds=LEASE_SECONDS))
            )

    def robot_may(robot: str, repo: str, action: str) -> str | None:
        """A mirror acts as its robot: pull mirrors push into, push mirrors pull from the local repository."""
        if access is None or not ctx.config.access.enabled:
            return None
        p = access.principal(robot)
        if p is None or p.kind != "robot" or p.disabled:
            return f"robot {robot!r} does not exist or is disabled"
        if not access.permissions(Identity(p.name, p.kind, p.id)).can(repo, action):
            return f"robot {robot!r} may not {action} {'to' if action == 'push' else 'from'} {repo}"
        return None

    robot_perms: list[Any] = []

    def may_link(digest: str) -> bool:
        """Only from repositories the mirror's robot may pull (any, when access control is off)."""
        if access is None or not ctx.config.access.enabled:
            return True
        p = access.principal(m.robot) if m.robot else None
        if p is None:
            return False
        if not robot_perms:
            robot_perms.append(access.permissions(Identity(p.name, p.kind, p.id)))
        with ctx.meta.engine.connect() as conn:
            holders = conn.execute(
                select(repositories.c.name)
                .join(repo_blobs, repo_blobs.c.repo_id == repositories.c.id)
                .where(repo_blobs.c.digest == digest)
            ).scalars()
            return any(robot_perms[0].can(name, "pull") for name in holders)

    def audit(actor: str, action: str, repo: str, digest: str, detail: dict[str, Any]) -> None:
        if access is not None and ctx.config.access.enabled:
            access.audit.record(actor, action, repo=repo, digest=digest, detail=detail)

    return Target(
        meta=ctx.meta,
        blobs=ctx.blobs,
        max_manifest_bytes=ctx.config.registry.max_manifest_bytes,
        on_push=ctx.pipeline.on_push,
        audit=audit,
        robot_may=robot_may,
        heartbeat=heartbeat,
        may_link=may_link,
    )


def run_now(ctx: Any, run_id: int) -> dict[str, Any]:
    """Run (or resume) one queued run in this thread; a run left ``retrying`` is queued again."""
    with ctx.meta.engine.connect() as conn:
        row = conn.execute(select(mirror_runs).where(mirror_runs.c.id == run_id)).mappings().first()
    store = store_of(ctx)
    m = store.get(int(row["mirror_id"])) if row else None
    if m is None or row is None:
        return {"run": run_id, "state": "gone"}  # the mirror was removed meanwhile
    if row["state"] in FINISHED:  # a duplicate job of a run already finished
        return {k: row[k] for k in ("state", "attempt", "error", "copied", "skipped", "failed")} | {"run": run_id}
    result = execute(m, run_id, target_for(ctx, m, run_id), lambda: store.credentials(m))
    access = access_of(ctx)
    if access is not None:
        access.audit.flush()
    if result["state"] == "retrying":
        payload = {"mirror": m.id, "run": run_id}
        ctx.pipeline.jobs.enqueue(KIND, job_key(m.id, run_id), payload, delay=retry_delay(result["attempt"]))
    return result


def queue_push_runs(pipeline: Any, repo: str, trigger: str = "approval") -> list[int]:
    """Queue a run of every enabled push mirror of ``repo``; returns the run ids. ``approval``: an image
    there was just approved; ``retirement`` / ``deletion`` (only mirrors with ``delete_remote``): one was
    retired, or a tag or manifest deleted. The remote is reached by a worker, never in the request."""
    cond = [mirrors.c.direction == "push", mirrors.c.destination == repo, mirrors.c.enabled.is_(True)]
    if trigger != "approval":
        cond.append(mirrors.c.delete_remote.is_(True))
    with pipeline.meta.engine.connect() as conn:
        mirror_ids = [int(i) for i in conn.execute(select(mirrors.c.id).where(*cond)).scalars()]
    if not mirror_ids:
        return []
    ctx = SimpleNamespace(meta=pipeline.meta, pipeline=pipeline, config=pipeline.config)
    store = store_of(ctx)
    runs = []
    for mid in mirror_ids:
        m = store.get(mid)
        if m is not None:
            runs.append(queue_run(ctx, m, trigger)[0])
    return runs


class RemovalListener:
    """A registry listener: a tag or manifest deleted through the registry API queues the runs of the
    repository's ``delete_remote`` push mirrors, on a pool thread (listeners are called on the loop)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def queue(self, repo: str) -> None:
        try:
            queue_push_runs(self.ctx.pipeline, repo, "deletion")
        except Exception:  # a listener must never break a delete
            log.exception("queueing push mirror runs after a delete in %s failed", repo)

    def __call__(self, event: str, repo: str, digest: str, tag: str | None) -> None:
        if event not in ("delete", "untag"):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop (a script, a test): queue here
            self.queue(repo)
            return
        loop.run_in_executor(self.ctx.registry.executor, self.queue, repo)


def install(ctx: Any) -> None:
    """Let this process's pipeline workers run mirror jobs (``ctx``: the ``Hallmark`` object)."""

    def handler(payload: dict[str, Any]) -> None:
        result = run_now(ctx, int(payload["run"]))
        if result["state"] == "failed" and result.get("error"):
            raise MirrorError(result["error"])  # the job shows the error too

    ctx.pipeline.handlers[KIND] = handler
    registry = getattr(ctx, "registry", None)
    if registry is not None and not any(isinstance(f, RemovalListener) for f in registry.listeners):
        registry.listeners.append(RemovalListener(ctx))


def queue_due(ctx: JobContext, now: dt.datetime | None = None) -> dict[str, Any]:
    """Queue a run of every enabled mirror whose schedule is due (once, whichever worker wins)."""
    now = now or utcnow()
    store = store_of(ctx)
    queued = []
    for m in store.all():
        if m.enabled and m.push and m.delete_remote and removed_since_last_run(ctx, m):
            run_id, created = queue_run(ctx, m, "deletion")
            if created:
                queued.append({"mirror": m.name, "run": run_id, "trigger": "deletion"})
        if not m.enabled or m.next_run_at is None or _aware(m.next_run_at) > now:
            continue
        if store.claim_schedule(m, now):
            run_id, created = queue_run(ctx, m, "schedule")
            if created:
                queued.append({"mirror": m.name, "run": run_id})
    return {"queued": queued}


def removed_since_last_run(ctx: Any, m: Mirror) -> bool:
    """Whether a tag of ``m``'s repository was removed (any way: API, retention, expiry, CLI) after its
    newest run started; False while that run is still queued (it will see the removal) or before any run
    (nothing was pushed yet)."""
    with ctx.meta.engine.connect() as conn:
        last = conn.execute(
            select(mirror_runs.c.state, mirror_runs.c.started_at)
            .where(mirror_runs.c.mirror_id == m.id)
            .order_by(mirror_runs.c.id.desc())
            .limit(1)
        ).first()
        if last is None or last.state == "queued" or last.started_at is None:
            return False
        h = tag_history.c
        removal = conn.execute(
            select(h.id)
            .where(h.repo_name == m.destination, h.new_digest.is_(None), h.created_at >= last.started_at)
            .limit(1)
        ).first()
    return removal is not None


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


SCHEDULE_SECONDS = 60.0
register(PeriodicJob("mirrors.schedule", lambda c: SCHEDULE_SECONDS, queue_due))

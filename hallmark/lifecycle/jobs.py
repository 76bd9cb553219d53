"""Every periodic job, registered in one place: what runs, how often (``[lifecycle]`` and
``[advisories]`` settings), and what it reports. Importing this module registers them."""

from __future__ import annotations

from typing import Any

from hallmark.config import Config
from hallmark.discovery.packages import backfill_job as packages_backfill
from hallmark.lifecycle.scheduler import JobContext, PeriodicJob, register
from hallmark.pipeline.finding_rows import backfill_job


def _advisories_update(ctx: JobContext) -> dict[str, Any]:
    from hallmark.pipeline.advisory_sets import update

    record = update(ctx.pipeline)
    return {"set": record.get("set"), "advisories": record.get("advisories")}


def _gc(ctx: JobContext) -> dict[str, Any]:
    from hallmark.lifecycle.tags import forget, gc_policy
    from hallmark.registry.gc import collect

    policy = gc_policy(ctx.meta, ctx.config)  # keeps manifests inside their time-machine window
    result = collect(ctx.meta, ctx.blobs, ctx.config.lifecycle.gc_grace_seconds, False, policy)
    if ctx.pipeline is not None:
        forget(result.manifests, ctx.pipeline.on_delete)
    return {"deleted": len(result.deleted), "unlinked": len(result.unlinked), "manifests": len(result.manifests)}


def _tags_expire(ctx: JobContext) -> dict[str, Any]:
    """Tags past their expiry label's due time or their repository's default expiry."""
    from hallmark.lifecycle.tags import expire_tags

    return expire_tags(ctx.meta, ctx.config)


def _retention(ctx: JobContext) -> dict[str, Any]:
    """Retention policies of repositories and namespaces, applied (removals go to the tag history)."""
    from hallmark.lifecycle.retention import run

    plans = run(ctx.meta, ctx.config)
    return {
        "removed": [f"{p.repository}:{t}" for p in plans for t in p.removed],
        "refused": {p.repository: p.refused for p in plans if p.refused},
    }


def _grades(ctx: JobContext) -> dict[str, Any]:
    """Grades that time alone moved (their next_drop date arrived), and images never graded."""
    from hallmark.lifecycle.health_store import grade_ungraded, regrade_due

    stats: dict[str, Any] = dict(regrade_due(ctx.meta))
    stats["graded"] = grade_ungraded(ctx.pipeline) if ctx.pipeline is not None else 0
    return stats


def _eol(ctx: JobContext) -> dict[str, Any]:
    """End-of-life status of every image as of today (statuses move with time)."""
    from hallmark.lifecycle.eol import refresh_all

    return refresh_all(ctx.pipeline) if ctx.pipeline is not None else {"skipped": "no pipeline"}


def _eol_policy(ctx: JobContext) -> dict[str, Any]:
    """[lifecycle] auto_deprecate_eol_os and auto_retire_after_days, through the catalog service."""
    from hallmark.access.service import AccessService
    from hallmark.lifecycle.eol_policy import apply

    access = getattr(ctx, "access", None) or AccessService.for_metadata(ctx.config, ctx.meta)
    try:
        return apply(ctx.pipeline, audit=access.audit)
    finally:
        access.audit.flush()


def _tokens_prune(ctx: JobContext) -> dict[str, Any]:
    """[access] token_prune_after_days: tokens long expired or revoked (sessions pile up otherwise)."""
    from hallmark.access.service import AccessService

    access = getattr(ctx, "access", None) or AccessService.for_metadata(ctx.config, ctx.meta)
    try:
        return {"deleted": access.prune_tokens("system", ctx.config.access.token_prune_after_days)}
    finally:
        access.audit.flush()


def _provenance_backfill(ctx: JobContext) -> dict[str, Any]:
    """Provenance of every stored manifest read again: images pushed before it was recorded, and
    signatures re-verified against today's trust store (a key added later turns rows verified)."""
    from hallmark.provenance.ingest import backfill

    return backfill(ctx.pipeline) if ctx.pipeline is not None else {"skipped": "no pipeline"}


def _eol_policy_interval(c: Config) -> float | None:
    on = c.lifecycle.auto_deprecate_eol_os or c.lifecycle.auto_retire_after_days is not None
    return _hours(c.lifecycle.policy_interval_hours) if on else None


def _hours(value: float) -> float:
    return value * 3600


def _advisory_interval(c: Config) -> float:
    return _hours(c.advisories.update_interval_hours)


register(PeriodicJob("advisories.update", _advisory_interval, _advisories_update))
register(PeriodicJob("gc", lambda c: _hours(c.lifecycle.gc_interval_hours), _gc))
register(PeriodicJob("tags.expire", lambda c: c.lifecycle.expiration_interval_minutes * 60, _tags_expire))
register(PeriodicJob("retention", lambda c: _hours(c.lifecycle.retention_interval_hours), _retention))
register(PeriodicJob("grades", lambda c: _hours(c.lifecycle.grades_interval_hours), _grades))
register(PeriodicJob("eol", lambda c: _hours(c.lifecycle.eol_interval_hours), _eol))
register(PeriodicJob("lifecycle.policy", _eol_policy_interval, _eol_policy))
register(PeriodicJob("tokens.prune", lambda c: _hours(24) if c.access.token_prune_after_days else None, _tokens_prune))
register(PeriodicJob("provenance.backfill", lambda c: _hours(24 * 7), _provenance_backfill))  # weekly; or --job
register(PeriodicJob("findings.backfill", lambda c: 3600.0, backfill_job))  # rows for reports older than them
register(PeriodicJob("packages.backfill", lambda c: 3600.0, packages_backfill))  # search rows of older images

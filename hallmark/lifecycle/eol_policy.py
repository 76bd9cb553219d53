"""Catalog policy from end of life: ``[lifecycle] auto_deprecate_eol_os`` and ``auto_retire_after_days``.

* ``auto_deprecate_eol_os``: an ``approved`` image whose base OS release is past its end of life
  (status ``eol`` as of today, :mod:`hallmark.lifecycle.eol`) becomes ``deprecated``.
* ``auto_retire_after_days``: a ``deprecated`` image (deprecated by anyone, for any reason) is
  ``retired`` that many days after it was deprecated (``catalog_entries.stage_changed_at``; for
  an entry deprecated before that column existed, its last history row to ``deprecated``).

Every change goes through :meth:`hallmark.catalog.service.CatalogService.promote`, so it is in
the catalog history and the audit log like a reviewer's, with actor ``lifecycle`` and a reason
that names the product, its cycle and the date. Run by the periodic job ``lifecycle.policy``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, func, select

from hallmark.catalog.tables import catalog_entries, catalog_history
from hallmark.lifecycle.eol import view
from hallmark.lifecycle.eol_data import SOURCE
from hallmark.metadata.store import utcnow
from hallmark.pipeline.tables import images

if TYPE_CHECKING:
    from hallmark.access.audit import AuditLog
    from hallmark.pipeline.service import Pipeline

ACTOR = "lifecycle"


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def eol_os(lifecycle: Mapping[str, Any] | None, today: dt.date, soon_days: int) -> dict[str, Any] | None:
    """The image's base OS entry when it is past end of life as of ``today``, else None."""
    doc = view(lifecycle, today, soon_days)
    if doc is None:
        return None
    return next((e for e in doc["entries"] if e["kind"] == "os" and e["status"] == "eol"), None)


def describe(entry: Mapping[str, Any]) -> str:
    """``Debian 11 (Bullseye) reached end of life on 2024-08-14 (endoflife.date)``."""
    name = f"{entry.get('title') or entry['product']} {entry['cycle']}"
    if entry.get("codename"):
        name += f" ({entry['codename']})"
    when = f"on {entry['eol']}" if entry.get("eol") else "(no date published)"
    extended = f"; extended support until {entry['extended_support']}" if entry.get("extended_support") else ""
    return f"{name} reached end of life {when} ({SOURCE}){extended}"


def _approved(pipeline: Pipeline) -> list[tuple[str, str, Any]]:
    q = (
        select(catalog_entries.c.repo_name, catalog_entries.c.digest, images.c.lifecycle)
        .select_from(
            catalog_entries.join(
                images,
                and_(images.c.repo_name == catalog_entries.c.repo_name, images.c.digest == catalog_entries.c.digest),
            )
        )
        .where(catalog_entries.c.stage == "approved")
        .order_by(catalog_entries.c.repo_name, catalog_entries.c.digest)
    )
    with pipeline.meta.engine.connect() as conn:
        return [(r[0], r[1], orjson.loads(r[2]) if r[2] else None) for r in conn.execute(q)]


def _deprecated(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Deprecated entries with when and why they were deprecated."""
    last = (
        select(
            catalog_history.c.repo_name, catalog_history.c.digest, func.max(catalog_history.c.created_at).label("at")
        )
        .where(catalog_history.c.to_stage == "deprecated")
        .group_by(catalog_history.c.repo_name, catalog_history.c.digest)
        .subquery()
    )
    q = (
        select(
            catalog_entries.c.repo_name,
            catalog_entries.c.digest,
            catalog_entries.c.stage_changed_at,
            catalog_entries.c.stage_reason,
            last.c.at,
            images.c.lifecycle,
        )
        .select_from(
            catalog_entries.outerjoin(
                last, and_(last.c.repo_name == catalog_entries.c.repo_name, last.c.digest == catalog_entries.c.digest)
            ).outerjoin(
                images,
                and_(images.c.repo_name == catalog_entries.c.repo_name, images.c.digest == catalog_entries.c.digest),
            )
        )
        .where(catalog_entries.c.stage == "deprecated")
        .order_by(catalog_entries.c.repo_name, catalog_entries.c.digest)
    )
    with pipeline.meta.engine.connect() as conn:
        return [
            {
                "repository": r[0],
                "digest": r[1],
                "since": _aware(r[2]) or _aware(r[4]),
                "why": r[3],
                "lifecycle": orjson.loads(r[5]) if r[5] else None,
            }
            for r in conn.execute(q)
        ]


def apply(pipeline: Pipeline, audit: AuditLog | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Deprecate approved images on an end-of-life OS and retire long-deprecated ones, as configured.

    One image's refusal (it changed stage meanwhile, an approval race) is reported and the
    others go on; nothing is changed when both settings are off.
    """
    from hallmark.catalog.service import CatalogError, CatalogService

    cfg = pipeline.config.lifecycle
    now = now or utcnow()
    today = now.astimezone(dt.UTC).date()
    service = CatalogService(pipeline)
    out: dict[str, Any] = {"deprecated": [], "retired": [], "errors": []}
    if cfg.auto_deprecate_eol_os:
        for repo, digest, lifecycle in _approved(pipeline):
            entry = eol_os(lifecycle, today, cfg.eol_soon_days)
            if entry is None:
                continue
            reason = f"base OS {describe(entry)}; deprecated by [lifecycle] auto_deprecate_eol_os"
            try:
                service.promote(repo, digest, "deprecated", ACTOR, reason, audit=audit)
            except CatalogError as exc:
                out["errors"].append({"image": f"{repo}@{digest}", "to": "deprecated", "error": str(exc)})
                continue
            out["deprecated"].append({"image": f"{repo}@{digest}", "reason": reason})
    days = cfg.auto_retire_after_days
    if days is not None:
        cutoff = now - dt.timedelta(days=days)
        for row in _deprecated(pipeline):
            since = row["since"]
            if since is None or since > cutoff:
                continue
            repo, digest = row["repository"], row["digest"]
            reason = f"deprecated on {since.date().isoformat()}"
            if row["why"]:
                reason += f" ({str(row['why'])[:200]})"
            reason += f"; retired {days} days after deprecation by [lifecycle] auto_retire_after_days"
            entry = eol_os(row["lifecycle"], today, cfg.eol_soon_days)
            if entry is not None and describe(entry) not in reason:
                reason += f"; base OS {describe(entry)}"
            try:
                service.promote(repo, digest, "retired", ACTOR, reason, audit=audit)
            except CatalogError as exc:
                out["errors"].append({"image": f"{repo}@{digest}", "to": "retired", "error": str(exc)})
                continue
            out["retired"].append({"image": f"{repo}@{digest}", "reason": reason})
    return out

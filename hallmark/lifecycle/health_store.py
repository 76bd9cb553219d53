"""Storing health grades: the grade columns of ``images`` and the daily re-grade.

Apart from :mod:`hallmark.lifecycle.health` (the grading rules, no database) so that
``hallmark scan`` grades an image without importing SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import select, update

from hallmark.lifecycle.health import GRADES, assess, columns, regrade, utc_today
from hallmark.metadata.store import MetadataStore
from hallmark.pipeline.tables import images


def store_many(meta: MetadataStore, items: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Write many images' grades in one transaction."""
    if not items:
        return
    with meta.transaction() as conn:
        for repo, digest, health in items:
            conn.execute(
                update(images).where(images.c.repo_name == repo, images.c.digest == digest).values(**columns(health))
            )


def regrade_due(meta: MetadataStore, on: dt.date | None = None, batch: int = 500) -> dict[str, int]:
    """Re-grade every image whose ``next_drop`` date has arrived (the daily ``grades`` job)."""
    on = on or utc_today()
    stats = {"checked": 0, "regraded": 0}
    moving = [g for g in GRADES if g not in ("A", "F")]  # A and F never drop with time
    q = select(images.c.repo_name, images.c.digest, images.c.health).where(images.c.grade.in_(moving))
    with meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    due: list[tuple[str, str, Mapping[str, Any]]] = []
    for repo, digest, raw in rows:
        stats["checked"] += 1
        try:
            health = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            continue
        drop = (health or {}).get("next_drop") or {}
        if health and drop.get("on") and drop["on"] <= on.isoformat():
            due.append((repo, digest, regrade(health, on)))
    for i in range(0, len(due), batch):
        store_many(meta, due[i : i + batch])
    stats["regraded"] = len(due)
    return stats


def grade_ungraded(pipeline: Any, on: dt.date | None = None) -> int:
    """Grade matched images that have no grade yet (matched before grades existed) from a fresh
    match against the active advisory set; the stored report is not replaced."""
    from hallmark.pipeline.matching import apply_stored_vex, build_report

    on = on or utc_today()
    q = select(images.c.repo_name, images.c.digest).where(images.c.status == "done", images.c.grade.is_(None))
    with pipeline.meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    items: list[tuple[str, str, Mapping[str, Any]]] = []
    for repo, digest in rows:
        report = build_report(pipeline, repo, digest)
        if report is None:
            continue
        items.append((repo, digest, assess(apply_stored_vex(pipeline, report, repo, digest), on)))
    store_many(pipeline.meta, items)
    return len(items)

"""SQL for the catalog: entries (joined with the pipeline's images so unlisted images read as staging)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Text, and_, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from hallmark.catalog.tables import catalog_entries, catalog_history
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.pipeline.findings import of_summary
from hallmark.pipeline.tables import images

DEFAULT_STAGE = "staging"
_FIELDS = ("owner", "owner_kind", "description", "support_status", "signature_digest")


class CatalogStore:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def get(self, repo: str, digest: str) -> dict[str, Any] | None:
        """The stored entry, or None when the image was never changed from the default."""
        q = select(catalog_entries).where(catalog_entries.c.repo_name == repo, catalog_entries.c.digest == digest)
        with self.meta.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return _entry(row) if row else None

    def ensure(self, repo: str, digest: str) -> None:
        """Create the default (staging) row if missing; a concurrent creator wins harmlessly."""
        if self.get(repo, digest) is not None:
            return
        try:
            with self.meta.transaction() as conn:
                conn.execute(
                    catalog_entries.insert().values(
                        repo_name=repo, digest=digest, stage=DEFAULT_STAGE, updated_at=utcnow()
                    )
                )
        except IntegrityError:
            pass

    def set_fields(self, repo: str, digest: str, values: dict[str, Any]) -> None:
        values = {k: v for k, v in values.items() if k in _FIELDS}
        self.ensure(repo, digest)
        with self.meta.transaction() as conn:
            conn.execute(
                update(catalog_entries)
                .where(catalog_entries.c.repo_name == repo, catalog_entries.c.digest == digest)
                .values(**values, updated_at=utcnow())
            )

    def transition(
        self,
        repo: str,
        digest: str,
        from_stage: str,
        to_stage: str,
        actor: str,
        reason: str,
        *,
        forced: bool = False,
        signature_digest: str | None = None,
        detail: dict[str, Any] | None = None,
        replacement: str | None = None,
    ) -> bool:
        """Compare-and-set the stage and append the history row in one transaction.

        The entry keeps why and when its stage last changed, and ``replacement`` (what to pull
        instead; None clears it). False when the stage is no longer ``from_stage`` (another
        reviewer got there first).
        """
        self.ensure(repo, digest)
        now = utcnow()
        values: dict[str, Any] = {
            "stage": to_stage,
            "updated_at": now,
            "stage_reason": reason,
            "stage_changed_at": now,
            "replacement": replacement,
        }
        if signature_digest is not None:
            values["signature_digest"] = signature_digest
        with self.meta.transaction() as conn:
            res = conn.execute(
                update(catalog_entries)
                .where(
                    catalog_entries.c.repo_name == repo,
                    catalog_entries.c.digest == digest,
                    catalog_entries.c.stage == from_stage,
                )
                .values(**values)
            )
            if res.rowcount != 1:
                return False
            conn.execute(
                catalog_history.insert().values(
                    repo_name=repo,
                    digest=digest,
                    actor=actor,
                    from_stage=from_stage,
                    to_stage=to_stage,
                    reason=reason,
                    forced=forced,
                    signature_digest=signature_digest,
                    detail=orjson.dumps(detail or {}).decode(),
                    created_at=now,
                )
            )
        return True

    def history(self, repo: str, digest: str) -> list[dict[str, Any]]:
        q = (
            select(catalog_history)
            .where(catalog_history.c.repo_name == repo, catalog_history.c.digest == digest)
            .order_by(catalog_history.c.id)
        )
        with self.meta.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in rows:
            d = {str(k): v for k, v in r.items()}
            d["detail"] = orjson.loads(d["detail"])
            d["repository"] = d.pop("repo_name")
            d["from"], d["to"] = d.pop("from_stage"), d.pop("to_stage")
            d["forced"] = bool(d["forced"])
            d.pop("id")
            out.append(d)
        return out

    def search(
        self,
        stage: str | None = None,
        q: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
        grades: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Images known to the pipeline with their catalog entry (staging when none is stored),
        their finding counts of every kind (``combined``), so a catalog list cannot look cleaner
        than the image, and their health grade (``unknown`` until graded; ``grades`` filters)."""
        stage_col = func.coalesce(catalog_entries.c.stage, literal(DEFAULT_STAGE, Text))
        query = (
            select(
                images.c.repo_name,
                images.c.digest,
                images.c.status,
                images.c.summary,
                images.c.grade,
                stage_col.label("stage"),
                *(catalog_entries.c[f] for f in _FIELDS),
                catalog_entries.c.updated_at,
            )
            .select_from(
                images.outerjoin(
                    catalog_entries,
                    and_(
                        catalog_entries.c.repo_name == images.c.repo_name, catalog_entries.c.digest == images.c.digest
                    ),
                )
            )
            .order_by(images.c.repo_name, images.c.digest)
            .limit(limit)
        )
        if stage:
            query = query.where(stage_col == stage)
        if owner:
            query = query.where(catalog_entries.c.owner == owner)
        if grades:
            by_grade = images.c.grade.in_(grades)
            query = query.where(or_(by_grade, images.c.grade.is_(None)) if "unknown" in grades else by_grade)
        if q:
            needle = q.lower()
            query = query.where(
                or_(
                    func.lower(images.c.repo_name).contains(needle, autoescape=True),
                    func.lower(catalog_entries.c.description).contains(needle, autoescape=True),
                    func.lower(catalog_entries.c.owner).contains(needle, autoescape=True),
                )
            )
        with self.meta.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for r in rows:
            d = {str(k): v for k, v in r.items()}
            d["repository"] = d.pop("repo_name")
            d["image_status"] = d.pop("status")
            summary = d.pop("summary")
            d["combined"] = of_summary(orjson.loads(summary)) if summary else None
            d["grade"] = d["grade"] or "unknown"
            out.append(d)
        return out


def _entry(row: Any) -> dict[str, Any]:
    d = {str(k): v for k, v in row.items()}
    d["repository"] = d.pop("repo_name")
    return d

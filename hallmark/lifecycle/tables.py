"""Lifecycle tables: periodic jobs, tag history and expirations, per-namespace/repository settings.

Grades and end-of-life matches live on the pipeline's ``images`` rows (columns ``grade``,
``health``, ``lifecycle``); deprecation details on ``catalog_entries`` (``replacement``,
``stage_reason``, ``stage_changed_at``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from hallmark.metadata.tables import metadata

# One row per periodic job; a worker claims a due job with one conditional UPDATE, so two
# workers (or replicas) never run the same job at once, and a crashed claim expires.
scheduled_jobs = Table(
    "scheduled_jobs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("last_started_at", DateTime(timezone=True), nullable=True),
    Column("last_finished_at", DateTime(timezone=True), nullable=True),
    Column("last_status", String(16), nullable=True),  # ok | failed
    Column("last_detail", Text, nullable=True),  # JSON summary or the error
)

# Every move or removal of a tag (Quay's "time machine"): restore reads it, GC keeps what it names.
tag_history = Table(
    "tag_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("old_digest", String(140), nullable=True),
    Column("new_digest", String(140), nullable=True),
    Column("action", String(16), nullable=False),  # push | move | delete | expire | restore | retention
    Column("actor", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_tag_history_tag", "repo_name", "tag", "created_at"),
    Index("ix_tag_history_time", "created_at"),
)

# When a tag expires (label ``quay.expires-after`` / ``hallmark.expires-after`` or the default).
tag_expirations = Table(
    "tag_expirations",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("digest", String(140), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("source", String(64), nullable=False),
    Index("ix_tag_expirations_due", "expires_at"),
)

# Settings per namespace or repository (a repository's own row wins over its namespace's).
lifecycle_settings = Table(
    "lifecycle_settings",
    metadata,
    Column("scope_kind", String(16), primary_key=True),  # namespace | repository
    Column("scope", String(255), primary_key=True),
    Column("retired_pull", String(8), nullable=True),  # deny | warn
    Column("tag_expiry_seconds", Integer, nullable=True),
    Column("time_machine_seconds", Integer, nullable=True),
    Column("retention", Text, nullable=True),  # JSON policy, see hallmark.lifecycle.retention
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

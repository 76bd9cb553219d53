"""Catalog tables: one entry per image that left the default stage or got metadata, plus its history.

An image without a row is in ``staging``: every pushed image is catalogued without a write on push.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, String, Table, Text

from hallmark.metadata.tables import metadata

catalog_entries = Table(
    "catalog_entries",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("stage", String(16), nullable=False),  # staging, approved, deprecated, retired
    Column("owner", String(128), nullable=True),
    Column("owner_kind", String(8), nullable=True),  # team or user
    Column("description", Text, nullable=True),
    Column("support_status", Text, nullable=True),
    Column("signature_digest", String(140), nullable=True),  # the approval stamp of the last approval
    Column("replacement", String(400), nullable=True),  # deprecated/retired: repo@digest or repo:tag to use
    Column("stage_reason", Text, nullable=True),  # why the last stage change happened
    Column("stage_changed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_catalog_stage", "stage"),
)

catalog_history = Table(
    "catalog_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("digest", String(140), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("from_stage", String(16), nullable=False),
    Column("to_stage", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("forced", Boolean, nullable=False, default=False),
    Column("signature_digest", String(140), nullable=True),
    Column("detail", Text, nullable=False),  # JSON: the gate results at the time
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_catalog_history_image", "repo_name", "digest"),
)

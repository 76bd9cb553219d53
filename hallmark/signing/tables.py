"""The latest signature-verification outcome per image, so the catalog can show it without re-verifying."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, String, Table, Text

from hallmark.metadata.tables import metadata

image_verifications = Table(
    "image_verifications",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("passed", Boolean, nullable=False),
    Column("level", String(16), nullable=True),  # the trust policy level used (strict, permissive, audit, skip)
    Column("policy", String(255), nullable=True),  # trust policy statement name
    Column("error", Text, nullable=True),
    Column("detail", Text, nullable=False),  # JSON: per-signature results (and per-report, when checked)
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

"""The latest admission decision per workload, so inventories and explore can show it."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, String, Table, Text

from hallmark.metadata.tables import metadata

admission_decisions = Table(
    "admission_decisions",
    metadata,
    Column("cluster", String(253), primary_key=True),  # "" when the webhook URL names no cluster
    Column("namespace", String(253), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("uid", String(64), nullable=False),  # AdmissionReview request.uid
    Column("operation", String(16), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("mode", String(8), nullable=False),  # enforce | audit | off
    Column("reasons", Text, nullable=False),  # JSON: per container: image, digest, rule, message
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

"""Relational schema for registry metadata (SQLite and PostgreSQL alike).

Feature modules add their own tables to the same :data:`metadata`; Alembic
migrations in ``hallmark/migrations`` create them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("immutable_tags", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(140), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

repo_blobs = Table(
    "repo_blobs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(140), ForeignKey("blobs.digest"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("subject_digest", String(140), nullable=True),
    Column("annotations", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_manifests_subject", "repo_id", "subject_digest"),
)

# What each manifest references: layers/config blobs and child manifests (for GC and deletes).
manifest_refs = Table(
    "manifest_refs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("ref_digest", String(140), primary_key=True),
    Column("kind", String(16), nullable=False),
    Index("ix_manifest_refs_ref", "repo_id", "ref_digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("digest", String(140), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_tags_digest", "repo_id", "digest"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repo_name", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # A finished or cancelled session (tombstone), kept until it expires so its id is refused.
    Column("closed", Boolean, nullable=False, server_default=false()),
    # Who wrote its first data (NULL without access control): open sessions are limited per principal.
    Column("principal", String(128), nullable=True),
    Index("ix_uploads_principal", "principal", "closed"),
)

# State every replica must share (#16 [Scale]): keys generated once per installation, not per data folder.
instance_secrets = Table(
    "instance_secrets",
    metadata,
    Column("name", String(64), primary_key=True),  # token-signing-key, upload-session-key, mirror-key, ...
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Fixed-window counters (login throttles, rate limits) shared by replicas.
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("count", Integer, nullable=False),
)

# Version counters bumped on changes that per-process caches depend on (access, catalog stages, advisory set).
state_versions = Table(
    "state_versions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

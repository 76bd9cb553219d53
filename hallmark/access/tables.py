"""Tables for identities, grants, tokens, repository visibility and the audit chain."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from hallmark.metadata.tables import metadata

# Users and robot accounts (kind = "user" | "robot"); robots have no password, only tokens.
principals = Table(
    "access_principals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("description", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Ids of deleted principals: never handed out again (SQLite would otherwise reuse the highest
# rowid), so nothing that still names an old id (a registry JWT) can come to mean someone else.
retired_principals = Table(
    "access_retired_principals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=False),
)

# Organisations / namespaces: the first path component of repository names.
namespaces = Table(
    "access_namespaces",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("description", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

teams = Table(
    "access_teams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

team_members = Table(
    "access_team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("access_teams.id", ondelete="CASCADE"), primary_key=True),
    Column("principal_id", Integer, ForeignKey("access_principals.id", ondelete="CASCADE"), primary_key=True),
)

# One role for one subject (principal or team) on one scope: namespace, repository or the catalog.
grants = Table(
    "access_grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_kind", String(16), nullable=False),  # principal | team
    Column("subject_id", Integer, nullable=False),
    Column("scope_kind", String(16), nullable=False),  # namespace | repository | catalog
    Column("scope", String(255), nullable=False),  # name, or "" for catalog
    Column("role", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("subject_kind", "subject_id", "scope_kind", "scope", "role", name="uq_access_grants_all"),
    Index("ix_access_grants_subject", "subject_kind", "subject_id"),
)

# API/robot tokens: only a SHA-256 of the secret is kept; the public id locates the row.
tokens = Table(
    "access_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("principal_id", Integer, ForeignKey("access_principals.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("scopes", Text, nullable=True),  # JSON list of "repository:<name|ns/*|*>:<actions>"; null: all owner's
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_access_tokens_principal", "principal_id"),
)

repo_settings = Table(
    "access_repo_settings",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("public", Boolean, nullable=False),
)

# Append-only hash chain: hash = sha256(prev_hash + canonical(entry)); seq is dense and unique.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("repo", String(255), nullable=True),
    Column("digest", String(140), nullable=True),
    Column("result", String(16), nullable=False),
    Column("client_addr", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_ts", "ts"),
    Index("ix_audit_log_actor", "actor"),
    Index("ix_audit_log_repo", "repo"),
)

# When old entries are pruned, the hash of the last pruned one anchors the remaining chain.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

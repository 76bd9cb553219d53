"""Repository mirror tables: definitions, runs, and per-tag progress of each run.

Per-tag rows are what makes a run resumable: a worker that dies mid-run leaves its job's lease
to expire, the job is claimed again, and the run skips every tag already marked done. For push
mirrors they are also the record of what the mirror put on the remote: ``delete_remote`` only ever
removes tags a run of the same mirror ``copied`` there.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from hallmark.metadata.tables import metadata

ID = BigInteger().with_variant(Integer, "sqlite")

mirrors = Table(
    "mirrors",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    # pull: copy source_registry/source_repository into the local ``destination``.
    # push: copy the local ``destination`` repository out to source_registry/source_repository.
    Column("direction", String(8), nullable=False, server_default="pull"),
    Column("source_registry", String(255), nullable=False),  # host[:port]
    Column("source_repository", String(255), nullable=False),
    Column("destination", String(255), nullable=False),
    Column("insecure", Boolean, nullable=False, default=False),  # plain HTTP to the source
    Column("username", String(255), nullable=True),
    Column("password_sealed", Text, nullable=True),  # AES-GCM under the data folder's mirror key
    Column("tag_filters", Text, nullable=False),  # JSON {"include": [...], "exclude": [...]}
    Column("platforms", Text, nullable=True),  # JSON ["linux/amd64", ...]; null: every platform
    Column("interval_seconds", Integer, nullable=True),
    Column("cron", String(128), nullable=True),
    Column("copy_referrers", Boolean, nullable=False, default=True),
    # push only: remove from the remote what this mirror pushed once it is retired or deleted here
    Column("delete_remote", Boolean, nullable=False, default=False, server_default=false()),
    Column("robot", String(128), nullable=True),
    Column("timeout_seconds", Float, nullable=False, default=60.0),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("next_run_at", DateTime(timezone=True), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

mirror_runs = Table(
    "mirror_runs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("mirror_id", ID, nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | manual | approval (push mirrors)
    Column("state", String(16), nullable=False),  # queued | running | retrying | succeeded | partial | failed
    Column("attempt", Integer, nullable=False, default=0),
    Column("copied", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0, server_default="0"),  # push: tags removed from the remote
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("blobs_copied", Integer, nullable=False, default=0),
    Column("blobs_skipped", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("next_retry_at", DateTime(timezone=True), nullable=True),
    Index("ix_mirror_runs_mirror", "mirror_id", "id"),
)

mirror_run_tags = Table(
    "mirror_run_tags",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False),
    Column("tag", String(128), nullable=False),
    Column("action", String(8), nullable=False, default="copy", server_default="copy"),  # copy | delete (push: remote)
    Column("state", String(16), nullable=False),  # pending | copied | skipped | failed | deleted
    Column("source_digest", String(140), nullable=True),
    Column("digest", String(140), nullable=True),  # stored (differs when a platform filter rewrote an index)
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("blobs_copied", Integer, nullable=False, default=0),
    Column("blobs_skipped", Integer, nullable=False, default=0),
    Column("referrers", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("seconds", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("note", Text, nullable=True),  # why a tag was skipped or how it was deleted ("already gone")
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("run_id", "tag", name="uq_mirror_run_tag"),
)

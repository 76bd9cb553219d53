"""Tables of the scanning pipeline: job queue, index cache, image status, reports, advisory sets, events."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
)

from hallmark.metadata.tables import metadata

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    # De-duplication key: a queued job with the same kind and key is not added twice.
    Column("key", String(400), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("locked_by", String(64), nullable=True),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_jobs_pick", "state", "run_after"),
    Index("ix_jobs_key", "kind", "key", "state"),
)

# Opaque, zstd-compressed JSON documents by (kind, version, digest): layer and image index results.
index_cache = Table(
    "index_cache",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("doc", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per image (repository + manifest digest) that the pipeline knows about.
images = Table(
    "images",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("status", String(16), nullable=False),  # queued, indexing, indexed, scanning, done, failed
    Column("reason", Text, nullable=True),
    Column("indexer_version", String(32), nullable=True),
    Column("distro", Text, nullable=True),
    Column("package_count", Integer, nullable=True),
    Column("summary", Text, nullable=True),  # JSON: finding counts by severity, coverage notes
    Column("advisory_set", Integer, nullable=True),
    Column("grade", String(8), nullable=True),  # A..F or unknown (hallmark.lifecycle.health)
    Column("health", Text, nullable=True),  # JSON: grade, reason, next_drop, deciding finding
    Column("lifecycle", Text, nullable=True),  # JSON: end-of-life matches (hallmark.lifecycle.eol)
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_images_digest", "digest"),
)

reports = Table(
    "reports",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("kind", String(32), primary_key=True),  # sbom-cyclonedx, sbom-spdx, vulnerabilities, content
    Column("doc", LargeBinary, nullable=False),  # zstd JSON
    Column("artifact_digest", String(140), nullable=True),  # the referrer manifest attached in the registry
    Column("signature_digest", String(140), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

advisory_sets = Table(
    "advisory_sets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("blob_digest", String(140), nullable=False),
    Column("sources", Text, nullable=False),  # JSON: what was imported from where, when, ETags, counts, skips
    Column("active", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("repo_name", String(255), nullable=True),
    Column("digest", String(140), nullable=True),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_events_created", "created_at"),
)

# OpenVEX documents: per image (repo_name + digest) or global (both NULL); applied at match time.
vex_documents = Table(
    "vex_documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=True),
    Column("digest", String(140), nullable=True),
    Column("doc", Text, nullable=False),
    Column("uploaded_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_vex_image", "repo_name", "digest"),
)


# The findings of each image's current vulnerability report, one row each, so queries over
# millions of findings (explore, search by advisory) use indexes instead of reading reports.
# Rewritten whenever an image's report changes (hallmark.pipeline.matching).
image_findings = Table(
    "image_findings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("digest", String(140), nullable=False),
    Column("advisory_id", String(128), nullable=False),
    Column("package", String(255), nullable=False),
    Column("version", String(255), nullable=False),
    Column("ecosystem", String(64), nullable=True),
    Column("purl", Text, nullable=True),
    Column("severity", String(16), nullable=False),  # critical | high | medium | low | unknown
    Column("severity_rank", SmallInteger, nullable=False),  # 4 critical .. 1 low, 0 unknown
    Column("kev", Boolean, nullable=False),
    Column("fix_available", Boolean, nullable=False),
    Column("suppressed", Boolean, nullable=False),  # VEX not_affected / fixed
    Index("ix_image_findings_image", "digest", "repo_name"),
    Index("ix_image_findings_severity", "severity_rank", "digest"),
    Index("ix_image_findings_advisory", "advisory_id"),
    Index("ix_image_findings_package", "package"),
)

# Every id an advisory is also known by (CVE, GHSA, DSA, ...), so a query by any of them finds it.
advisory_aliases = Table(
    "advisory_aliases",
    metadata,
    Column("alias", String(128), primary_key=True),
    Column("advisory_id", String(128), primary_key=True),
)

"""Kubernetes inventories: clusters, the workloads a person manages, and the images they run.

Each upload replaces a cluster's rows in one transaction; ``clusters.inventory_at`` orders
uploads so an older inventory never replaces a newer one.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text

from hallmark.metadata.tables import metadata

BIGID = BigInteger().with_variant(Integer, "sqlite")

clusters = Table(
    "clusters",
    metadata,
    Column("name", String(253), primary_key=True),
    Column("inventory_at", DateTime(timezone=True), nullable=False),  # when the inventory was taken
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("received_by", String(128), nullable=False),
    Column("summary", Text, nullable=False),  # JSON: counts per kind, what was skipped and why
)

# The workload a person manages (top of the owner-reference chain): Deployment, StatefulSet,
# DaemonSet, CronJob, Job, ReplicaSet or bare Pod.
workloads = Table(
    "workloads",
    metadata,
    Column("id", BIGID, primary_key=True, autoincrement=True),
    Column("cluster", String(253), ForeignKey("clusters.name", ondelete="CASCADE"), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(64), nullable=True),
    Column("exposed", Boolean, nullable=False, default=False),
    Column("exposure", Text, nullable=True),  # JSON: paths ingress host/path -> service -> workload
    Column("labels", Text, nullable=True),  # JSON
    Index("ix_workloads_name", "cluster", "namespace", "kind", "name", unique=True),
    Index("ix_workloads_exposed", "exposed"),
)

# One row per container of a workload (deduplicated over its pods) and the digest it runs.
workload_images = Table(
    "workload_images",
    metadata,
    Column("id", BIGID, primary_key=True, autoincrement=True),
    Column("workload_id", BIGID, ForeignKey("workloads.id", ondelete="CASCADE"), nullable=False),
    Column("container", String(253), nullable=False),
    Column("container_type", String(16), nullable=False),  # container | init | ephemeral
    Column("image_ref", Text, nullable=False),  # as written in the spec
    Column("digest", String(140), nullable=True),  # NULL: could not be resolved
    Column("digest_source", String(16), nullable=True),  # status | spec | tag (resolved in Hallmark at ingest)
    Column("repo_name", String(255), nullable=True),  # the Hallmark repository, when the image is Hallmark's
    Index("ix_workload_images_digest", "digest"),
    Index("ix_workload_images_workload", "workload_id"),
)

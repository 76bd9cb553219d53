"""Provenance facts per image manifest, one row per source, so contradicting sources are all kept.

A row says what one source (an annotation, a config label, a signed SLSA statement, a CI
step) claims about how a digest was built; ``verified`` says whether a signature over that
claim checked out against the trust store (NULL: nothing to verify). Queries pick the
verified row first.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint

from hallmark.metadata.tables import metadata

provenance = Table(
    "provenance",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("digest", String(140), nullable=False),  # the image manifest (or index) digest described
    Column("repo_name", String(255), nullable=True),  # where it was seen; NULL when repository-independent
    Column("kind", String(16), nullable=False),  # annotation | label | slsa | intoto | ci
    # Where the fact came from: "manifest", "config", a referrer digest, or "api:<principal>".
    Column("origin", String(255), nullable=False),
    Column("verified", Boolean, nullable=True),  # NULL: unsigned source; False: signature did not verify
    Column("verify_detail", Text, nullable=True),  # signer key id / why verification failed
    Column("source_repo", String(512), nullable=True),  # normalised: https URL without .git / trailing /
    Column("revision", String(128), nullable=True),  # commit id
    Column("pipeline", String(255), nullable=True),  # workflow / pipeline definition name
    Column("run_id", String(128), nullable=True),
    Column("run_url", Text, nullable=True),
    Column("builder_id", Text, nullable=True),
    Column("facts", Text, nullable=False),  # JSON: every field this source gave (created, url, vendor, ...)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("digest", "kind", "origin", name="uq_provenance_source"),
    Index("ix_provenance_digest", "digest"),
    Index("ix_provenance_source_repo", "source_repo"),
)

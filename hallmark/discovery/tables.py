"""Tables of search by contents: one row per package of an image, and one text document per image.

``image_packages`` is written when an image is indexed (the inventory is at hand then) so a
package query over millions of rows uses the ``name``/``purl_name`` indexes instead of reading
inventories. ``search_documents`` holds the words of an image (repository name, config labels,
package names); on SQLite the FTS5 table ``search_fts`` (rowid = ``search_documents.id``, created
by migration 0012, not here since SQLAlchemy cannot declare virtual tables) indexes them, on
PostgreSQL GIN indexes over ``to_tsvector('simple', body)`` and ``body gin_trgm_ops`` do.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from hallmark.metadata.tables import metadata
from hallmark.pipeline.tables import image_findings

image_packages = Table(
    "image_packages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("digest", String(140), nullable=False),
    Column("name", String(255), nullable=False),
    Column("version", String(255), nullable=False),
    Column("ecosystem", String(64), nullable=True),
    Column("purl", Text, nullable=True),
    # the purl without version, qualifiers and subpath, type and namespace lower-cased
    # (pkg:pypi/django): what ``purl=`` matches
    Column("purl_name", String(512), nullable=True),
    # covering: a package query reads the index only (thousands of matches, no row fetches)
    Index("ix_image_packages_name", "name", "version", "ecosystem", "repo_name", "digest"),
    Index("ix_image_packages_purl_name", "purl_name", "version", "ecosystem", "repo_name", "digest"),
    Index("ix_image_packages_image", "digest", "repo_name"),
)

search_documents = Table(
    "search_documents",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("digest", String(140), nullable=False),
    Column("body", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_search_documents_image", "digest", "repo_name", unique=True),
)

# One row per indexed image: a hash of its layer digest list, so "which cataloged image is this
# one built on" is an index lookup of the hashes of its layer-list prefixes (hallmark.discovery.base).
image_chains = Table(
    "image_chains",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("digest", String(140), primary_key=True),
    Column("chain", String(64), nullable=False),  # sha256 hex of the layer digests joined by ","
    Column("layers", Integer, nullable=False),
    Index("ix_image_chains_chain", "chain"),
)

# covering index for "which images have advisory X" (the advisory filter and endpoint)
Index(
    "ix_image_findings_advisory_images",
    image_findings.c.advisory_id,
    image_findings.c.suppressed,
    image_findings.c.repo_name,
    image_findings.c.digest,
)
# and for kev=true / fix_available=true (images with such an unsuppressed finding)
Index(
    "ix_image_findings_kev_images",
    image_findings.c.kev,
    image_findings.c.suppressed,
    image_findings.c.repo_name,
    image_findings.c.digest,
)
Index(
    "ix_image_findings_fix_images",
    image_findings.c.fix_available,
    image_findings.c.suppressed,
    image_findings.c.repo_name,
    image_findings.c.digest,
)

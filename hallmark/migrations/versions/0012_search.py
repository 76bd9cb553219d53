"""discovery: image_packages, search_documents, image_chains (+ FTS5 on SQLite, GIN full text and trigram on PostgreSQL)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 02:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "image_packages",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=140), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("ecosystem", sa.String(length=64), nullable=True),
        sa.Column("purl", sa.Text(), nullable=True),
        sa.Column("purl_name", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    cover = ["version", "ecosystem", "repo_name", "digest"]
    op.create_index("ix_image_packages_name", "image_packages", ["name", *cover])
    op.create_index("ix_image_packages_purl_name", "image_packages", ["purl_name", *cover])
    for name, first in (("advisory", "advisory_id"), ("kev", "kev"), ("fix", "fix_available")):
        op.create_index(
            f"ix_image_findings_{name}_images", "image_findings", [first, "suppressed", "repo_name", "digest"]
        )
    op.create_index("ix_image_packages_image", "image_packages", ["digest", "repo_name"])
    op.create_table(
        "search_documents",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=140), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_search_documents_image", "search_documents", ["digest", "repo_name"], unique=True)
    op.create_table(
        "image_chains",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=140), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("layers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("repo_name", "digest"),
    )
    op.create_index("ix_image_chains_chain", "image_chains", ["chain"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_search_documents_fts ON search_documents USING gin (to_tsvector('simple', body))")
        op.execute("CREATE INDEX ix_search_documents_trgm ON search_documents USING gin (body gin_trgm_ops)")
    else:
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(body, content='', tokenize='unicode61')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS search_fts")
    for name in ("advisory", "kev", "fix"):
        op.drop_index(f"ix_image_findings_{name}_images", table_name="image_findings")
    op.drop_index("ix_image_chains_chain", table_name="image_chains")
    op.drop_table("image_chains")
    op.drop_table("search_documents")
    op.drop_index("ix_image_packages_image", table_name="image_packages")
    op.drop_index("ix_image_packages_purl_name", table_name="image_packages")
    op.drop_index("ix_image_packages_name", table_name="image_packages")
    op.drop_table("image_packages")

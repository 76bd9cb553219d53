"""latest signature verification per image

Revision ID: 0004_signing
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_signing"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_verifications",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=140), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("policy", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repo_name", "digest", name=op.f("pk_image_verifications")),
    )


def downgrade() -> None:
    op.drop_table("image_verifications")

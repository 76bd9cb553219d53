"""retired principal ids

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 16:40:00

Deleted principals leave their id here so it is never handed out again: on SQLite a new
row would otherwise take a deleted highest id, and a still-valid registry JWT naming that
id would act as the new principal.
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'access_retired_principals',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('access_retired_principals')

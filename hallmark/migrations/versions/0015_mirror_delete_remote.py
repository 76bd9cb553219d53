"""push mirrors: delete_remote, deletions recorded per run and tag

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mirrors') as batch:
        batch.add_column(sa.Column('delete_remote', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('mirror_runs') as batch:
        batch.add_column(sa.Column('deleted', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('mirror_run_tags') as batch:
        batch.add_column(sa.Column('action', sa.String(length=8), nullable=False, server_default='copy'))
        batch.add_column(sa.Column('note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('mirror_run_tags') as batch:
        batch.drop_column('note')
        batch.drop_column('action')
    with op.batch_alter_table('mirror_runs') as batch:
        batch.drop_column('deleted')
    with op.batch_alter_table('mirrors') as batch:
        batch.drop_column('delete_remote')

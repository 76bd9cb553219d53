"""state shared by replicas (instance secrets, rate counters, cache versions); push mirrors

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 04:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'instance_secrets',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_instance_secrets')),
    )
    op.create_table(
        'rate_counters',
        sa.Column('scope', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_rate_counters')),
    )
    op.create_table(
        'state_versions',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('version', BIGID, nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_state_versions')),
    )
    with op.batch_alter_table('mirrors') as batch:
        batch.add_column(sa.Column('direction', sa.String(length=8), nullable=False, server_default='pull'))


def downgrade() -> None:
    with op.batch_alter_table('mirrors') as batch:
        batch.drop_column('direction')
    op.drop_table('state_versions')
    op.drop_table('rate_counters')
    op.drop_table('instance_secrets')

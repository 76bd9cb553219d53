"""repository mirrors: definitions, runs, per-tag progress

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 02:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'mirrors',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('source_registry', sa.String(length=255), nullable=False),
        sa.Column('source_repository', sa.String(length=255), nullable=False),
        sa.Column('destination', sa.String(length=255), nullable=False),
        sa.Column('insecure', sa.Boolean(), nullable=False),
        sa.Column('username', sa.String(length=255), nullable=True),
        sa.Column('password_sealed', sa.Text(), nullable=True),
        sa.Column('tag_filters', sa.Text(), nullable=False),
        sa.Column('platforms', sa.Text(), nullable=True),
        sa.Column('interval_seconds', sa.Integer(), nullable=True),
        sa.Column('cron', sa.String(length=128), nullable=True),
        sa.Column('copy_referrers', sa.Boolean(), nullable=False),
        sa.Column('robot', sa.String(length=128), nullable=True),
        sa.Column('timeout_seconds', sa.Float(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'mirror_runs',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('mirror_id', BIGID, nullable=False),
        sa.Column('trigger', sa.String(length=16), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('copied', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('blobs_copied', sa.Integer(), nullable=False),
        sa.Column('blobs_skipped', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_mirror_runs_mirror', 'mirror_runs', ['mirror_id', 'id'])
    op.create_table(
        'mirror_run_tags',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('run_id', BIGID, nullable=False),
        sa.Column('tag', sa.String(length=128), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('source_digest', sa.String(length=140), nullable=True),
        sa.Column('digest', sa.String(length=140), nullable=True),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('blobs_copied', sa.Integer(), nullable=False),
        sa.Column('blobs_skipped', sa.Integer(), nullable=False),
        sa.Column('referrers', sa.Integer(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'tag', name='uq_mirror_run_tag'),
    )


def downgrade() -> None:
    op.drop_table('mirror_run_tags')
    op.drop_index('ix_mirror_runs_mirror', table_name='mirror_runs')
    op.drop_table('mirror_runs')
    op.drop_table('mirrors')

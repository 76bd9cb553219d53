"""lifecycle: scheduler, tag history and expirations, settings, grades, deprecation details

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 17:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'scheduled_jobs',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_by', sa.String(length=128), nullable=True),
        sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_status', sa.String(length=16), nullable=True),
        sa.Column('last_detail', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'tag_history',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('repo_name', sa.String(length=255), nullable=False),
        sa.Column('tag', sa.String(length=128), nullable=False),
        sa.Column('old_digest', sa.String(length=140), nullable=True),
        sa.Column('new_digest', sa.String(length=140), nullable=True),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_tag_history_tag', 'tag_history', ['repo_name', 'tag', 'created_at'])
    op.create_index('ix_tag_history_time', 'tag_history', ['created_at'])
    op.create_table(
        'tag_expirations',
        sa.Column('repo_name', sa.String(length=255), nullable=False),
        sa.Column('tag', sa.String(length=128), nullable=False),
        sa.Column('digest', sa.String(length=140), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('repo_name', 'tag'),
    )
    op.create_index('ix_tag_expirations_due', 'tag_expirations', ['expires_at'])
    op.create_table(
        'lifecycle_settings',
        sa.Column('scope_kind', sa.String(length=16), nullable=False),
        sa.Column('scope', sa.String(length=255), nullable=False),
        sa.Column('retired_pull', sa.String(length=8), nullable=True),
        sa.Column('tag_expiry_seconds', sa.Integer(), nullable=True),
        sa.Column('time_machine_seconds', sa.Integer(), nullable=True),
        sa.Column('retention', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('scope_kind', 'scope'),
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('grade', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('health', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('lifecycle', sa.Text(), nullable=True))
    with op.batch_alter_table('catalog_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replacement', sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column('stage_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('stage_changed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('catalog_entries', schema=None) as batch_op:
        batch_op.drop_column('stage_changed_at')
        batch_op.drop_column('stage_reason')
        batch_op.drop_column('replacement')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('lifecycle')
        batch_op.drop_column('health')
        batch_op.drop_column('grade')
    op.drop_table('lifecycle_settings')
    op.drop_index('ix_tag_expirations_due', table_name='tag_expirations')
    op.drop_table('tag_expirations')
    op.drop_index('ix_tag_history_time', table_name='tag_history')
    op.drop_index('ix_tag_history_tag', table_name='tag_history')
    op.drop_table('tag_history')
    op.drop_table('scheduled_jobs')

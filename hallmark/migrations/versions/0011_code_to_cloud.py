"""code to cloud: provenance, cluster inventories, admission decisions, findings rows

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 19:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'provenance',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('digest', sa.String(length=140), nullable=False),
        sa.Column('repo_name', sa.String(length=255), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('origin', sa.String(length=255), nullable=False),
        sa.Column('verified', sa.Boolean(), nullable=True),
        sa.Column('verify_detail', sa.Text(), nullable=True),
        sa.Column('source_repo', sa.String(length=512), nullable=True),
        sa.Column('revision', sa.String(length=128), nullable=True),
        sa.Column('pipeline', sa.String(length=255), nullable=True),
        sa.Column('run_id', sa.String(length=128), nullable=True),
        sa.Column('run_url', sa.Text(), nullable=True),
        sa.Column('builder_id', sa.Text(), nullable=True),
        sa.Column('facts', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('digest', 'kind', 'origin', name='uq_provenance_source'),
    )
    op.create_index('ix_provenance_digest', 'provenance', ['digest'])
    op.create_index('ix_provenance_source_repo', 'provenance', ['source_repo'])
    op.create_table(
        'clusters',
        sa.Column('name', sa.String(length=253), nullable=False),
        sa.Column('inventory_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('received_by', sa.String(length=128), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'workloads',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('cluster', sa.String(length=253), nullable=False),
        sa.Column('namespace', sa.String(length=253), nullable=False),
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=253), nullable=False),
        sa.Column('uid', sa.String(length=64), nullable=True),
        sa.Column('exposed', sa.Boolean(), nullable=False),
        sa.Column('exposure', sa.Text(), nullable=True),
        sa.Column('labels', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['cluster'], ['clusters.name'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_workloads_name', 'workloads', ['cluster', 'namespace', 'kind', 'name'], unique=True)
    op.create_index('ix_workloads_exposed', 'workloads', ['exposed'])
    op.create_table(
        'workload_images',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('workload_id', BIGID, nullable=False),
        sa.Column('container', sa.String(length=253), nullable=False),
        sa.Column('container_type', sa.String(length=16), nullable=False),
        sa.Column('image_ref', sa.Text(), nullable=False),
        sa.Column('digest', sa.String(length=140), nullable=True),
        sa.Column('digest_source', sa.String(length=16), nullable=True),
        sa.Column('repo_name', sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(['workload_id'], ['workloads.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_workload_images_digest', 'workload_images', ['digest'])
    op.create_index('ix_workload_images_workload', 'workload_images', ['workload_id'])
    op.create_table(
        'admission_decisions',
        sa.Column('cluster', sa.String(length=253), nullable=False),
        sa.Column('namespace', sa.String(length=253), nullable=False),
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=253), nullable=False),
        sa.Column('uid', sa.String(length=64), nullable=False),
        sa.Column('operation', sa.String(length=16), nullable=False),
        sa.Column('allowed', sa.Boolean(), nullable=False),
        sa.Column('mode', sa.String(length=8), nullable=False),
        sa.Column('reasons', sa.Text(), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('cluster', 'namespace', 'kind', 'name'),
    )
    op.create_table(
        'image_findings',
        sa.Column('id', BIGID, autoincrement=True, nullable=False),
        sa.Column('repo_name', sa.String(length=255), nullable=False),
        sa.Column('digest', sa.String(length=140), nullable=False),
        sa.Column('advisory_id', sa.String(length=128), nullable=False),
        sa.Column('package', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=255), nullable=False),
        sa.Column('ecosystem', sa.String(length=64), nullable=True),
        sa.Column('purl', sa.Text(), nullable=True),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('severity_rank', sa.SmallInteger(), nullable=False),
        sa.Column('kev', sa.Boolean(), nullable=False),
        sa.Column('fix_available', sa.Boolean(), nullable=False),
        sa.Column('suppressed', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_image_findings_image', 'image_findings', ['digest', 'repo_name'])
    op.create_index('ix_image_findings_severity', 'image_findings', ['severity_rank', 'digest'])
    op.create_index('ix_image_findings_advisory', 'image_findings', ['advisory_id'])
    op.create_index('ix_image_findings_package', 'image_findings', ['package'])
    op.create_table(
        'advisory_aliases',
        sa.Column('alias', sa.String(length=128), nullable=False),
        sa.Column('advisory_id', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('alias', 'advisory_id'),
    )


def downgrade() -> None:
    op.drop_table('advisory_aliases')
    op.drop_index('ix_image_findings_package', table_name='image_findings')
    op.drop_index('ix_image_findings_advisory', table_name='image_findings')
    op.drop_index('ix_image_findings_severity', table_name='image_findings')
    op.drop_index('ix_image_findings_image', table_name='image_findings')
    op.drop_table('image_findings')
    op.drop_table('admission_decisions')
    op.drop_index('ix_workload_images_workload', table_name='workload_images')
    op.drop_index('ix_workload_images_digest', table_name='workload_images')
    op.drop_table('workload_images')
    op.drop_index('ix_workloads_exposed', table_name='workloads')
    op.drop_index('ix_workloads_name', table_name='workloads')
    op.drop_table('workloads')
    op.drop_table('clusters')
    op.drop_index('ix_provenance_source_repo', table_name='provenance')
    op.drop_index('ix_provenance_digest', table_name='provenance')
    op.drop_table('provenance')

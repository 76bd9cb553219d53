"""upload session principal

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 18:00:00

Who opened each upload session that holds data, so the open sessions of one principal
can be counted ([registry] max_open_uploads_per_principal). Existing rows stay NULL
(not counted); they expire with the upload expiry.
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('principal', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_uploads_principal', ['principal', 'closed'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index('ix_uploads_principal')
        batch_op.drop_column('principal')

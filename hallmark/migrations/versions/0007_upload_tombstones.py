"""upload session tombstones

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 22:10:00

Upload sessions are recorded only once data is written; finished and cancelled ones
stay as ``closed`` rows until they expire, so their ids are refused.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('closed', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.execute("DELETE FROM uploads WHERE closed")
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_column('closed')

"""alarms

Revision ID: 0008
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'alarms',
        sa.Column('managed_object_id', sa.String(length=128), nullable=False),
        sa.Column('probable_cause', sa.String(length=128), nullable=False),
        sa.Column('perceived_severity', sa.String(length=16), nullable=False),
        sa.Column('active_key', sa.String(length=300), nullable=True),
        sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('resource_group_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_alarms')),
        sa.UniqueConstraint('id', name=op.f('uq_alarms_id')),
        sa.UniqueConstraint('active_key', name=op.f('uq_alarms_active_key')),
    )
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alarms_managed_object_id'), ['managed_object_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alarms_cleared_at'), ['cleared_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_alarms_resource_group_id'), ['resource_group_id'], unique=False)
        batch_op.create_index('ix_alarms_severity_seq', ['perceived_severity', 'seq'], unique=False)


def downgrade() -> None:
    op.drop_table('alarms')

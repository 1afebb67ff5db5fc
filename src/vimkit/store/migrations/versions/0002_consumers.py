"""consumers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:05:18.758478
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('consumers',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('consumer_name', sa.String(length=255), nullable=False),
    sa.Column('resource_group_id', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret_hash', sa.String(length=255), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_consumers')),
    sa.UniqueConstraint('client_id', name=op.f('uq_consumers_client_id')),
    sa.UniqueConstraint('id', name=op.f('uq_consumers_id'))
    )
    with op.batch_alter_table('consumers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consumers_resource_group_id'), ['resource_group_id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('consumers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consumers_resource_group_id'))

    op.drop_table('consumers')
    

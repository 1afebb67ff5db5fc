"""infrastructure

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 21:21:46.964853
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('host_states',
    sa.Column('host_id', sa.String(length=64), nullable=False),
    sa.Column('admin_state', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('host_id', name=op.f('pk_host_states'))
    )
    op.create_table('injected_faults',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('driver_fault_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('repaired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_injected_faults')),
    sa.UniqueConstraint('id', name=op.f('uq_injected_faults_id'))
    )
    op.create_table('placement_claims',
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('claim', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resource_id', name=op.f('pk_placement_claims'))
    )
    with op.batch_alter_table('placement_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_placement_claims_kind'), ['kind'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('placement_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_placement_claims_kind'))

    op.drop_table('placement_claims')
    op.drop_table('injected_faults')
    op.drop_table('host_states')
    

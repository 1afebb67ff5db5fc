"""foundation

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 20:04:28.847101
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('flavours',
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('resource_group_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_flavours')),
    sa.UniqueConstraint('id', name=op.f('uq_flavours_id'))
    )
    with op.batch_alter_table('flavours', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flavours_is_public'), ['is_public'], unique=False)
        batch_op.create_index(batch_op.f('ix_flavours_resource_group_id'), ['resource_group_id'], unique=False)

    op.create_table('idempotency_keys',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('consumer_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('in_flight', sa.Boolean(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('headers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('consumer_id', 'key', name='uq_idempotency_consumer_key')
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_created_at'), ['created_at'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_created_at'))

    op.drop_table('idempotency_keys')
    with op.batch_alter_table('flavours', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flavours_resource_group_id'))
        batch_op.drop_index(batch_op.f('ix_flavours_is_public'))

    op.drop_table('flavours')
    

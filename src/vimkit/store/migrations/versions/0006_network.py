"""network: networks, subnets, ports, segment and address allocations, affinity groups

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 21:40:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def _document_columns() -> list[sa.Column]:
    return [
        sa.Column('seq', SEQ, autoincrement=True, nullable=False),
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('resource_group_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('body', JSON, nullable=False),
    ]


def _document_table(name: str, *columns: sa.Column, indexes: tuple[str, ...] = (), extra=()) -> None:
    op.create_table(
        name,
        *_document_columns(),
        *columns,
        sa.PrimaryKeyConstraint('seq', name=f'pk_{name}'),
        sa.UniqueConstraint('id', name=f'uq_{name}_id'),
        *extra,
    )
    for column in ('resource_group_id', *indexes):
        op.create_index(f'ix_{name}_{column}', name, [column], unique=False)


def upgrade() -> None:
    _document_table(
        'networks',
        sa.Column('is_shared', sa.Boolean(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('provider_network_id', sa.String(length=64), nullable=False),
        indexes=('is_shared', 'provider_network_id'),
    )
    _document_table(
        'subnets',
        sa.Column('network_id', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        indexes=('network_id',),
    )
    _document_table(
        'ports',
        sa.Column('network_id', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('mac', sa.String(length=17), nullable=False),
        sa.Column('attached_resource_id', sa.String(length=64), nullable=True),
        indexes=('network_id', 'attached_resource_id'),
        extra=(sa.UniqueConstraint('mac', name='uq_ports_mac'),),
    )
    op.create_table(
        'network_segments',
        sa.Column('seq', SEQ, autoincrement=True, nullable=False),
        sa.Column('provider_network_id', sa.String(length=64), nullable=False),
        sa.Column('segmentation_id', sa.Integer(), nullable=False),
        sa.Column('network_id', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('seq', name='pk_network_segments'),
        sa.UniqueConstraint('network_id', name='uq_network_segments_network_id'),
        sa.UniqueConstraint('provider_network_id', 'segmentation_id', name='uq_network_segments_provider_segment'),
    )
    op.create_table(
        'ip_allocations',
        sa.Column('seq', SEQ, autoincrement=True, nullable=False),
        sa.Column('subnet_id', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=45), nullable=False),
        sa.Column('port_id', sa.String(length=64), nullable=True),
        sa.Column('in_pool', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('seq', name='pk_ip_allocations'),
        sa.UniqueConstraint('subnet_id', 'address', name='uq_ip_allocations_subnet_address'),
    )
    op.create_index('ix_ip_allocations_port_id', 'ip_allocations', ['port_id'], unique=False)
    _document_table('network_affinity_groups')


def downgrade() -> None:
    op.drop_index('ix_network_affinity_groups_resource_group_id', table_name='network_affinity_groups')
    op.drop_table('network_affinity_groups')
    op.drop_index('ix_ip_allocations_port_id', table_name='ip_allocations')
    op.drop_table('ip_allocations')
    op.drop_table('network_segments')
    for name, indexes in (('ports', ('network_id', 'attached_resource_id')), ('subnets', ('network_id',)),
                          ('networks', ('is_shared', 'provider_network_id'))):
        for column in ('resource_group_id', *indexes):
            op.drop_index(f'ix_{name}_{column}', table_name=name)
        op.drop_table(name)

"""network: subnet allocation counters, network affinity group members

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 01:00:00

Hand-written. The counters of existing subnets are computed from their allocations; the cursor
starts where the former allocator started (after as many positions as addresses are held).
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("subnets") as batch:
        batch.add_column(sa.Column("pool_used", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pool_cursor", sa.BigInteger(), nullable=False, server_default="0"))
    subnets = sa.table("subnets", sa.column("id", sa.String), sa.column("pool_used", sa.BigInteger),
                       sa.column("pool_cursor", sa.BigInteger))
    allocations = sa.table("ip_allocations", sa.column("subnet_id", sa.String), sa.column("in_pool", sa.Boolean))
    held = (sa.select(sa.func.count()).select_from(allocations)
            .where(allocations.c.subnet_id == subnets.c.id, allocations.c.in_pool.is_(True)).scalar_subquery())
    op.execute(subnets.update().values(pool_used=held, pool_cursor=held))
    op.create_table(
        "network_affinity_members",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("provider_network_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_network_affinity_members"),
        sa.UniqueConstraint("group_id", "resource_id", name="uq_network_affinity_members_group_resource"),
    )
    op.create_index("ix_network_affinity_members_resource_id", "network_affinity_members", ["resource_id"])


def downgrade() -> None:
    op.drop_index("ix_network_affinity_members_resource_id", table_name="network_affinity_members")
    op.drop_table("network_affinity_members")
    with op.batch_alter_table("subnets") as batch:
        batch.drop_column("pool_cursor")
        batch.drop_column("pool_used")

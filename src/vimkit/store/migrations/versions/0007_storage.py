"""storage: volumes, snapshots, storage affinity groups

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-25 21:40:00

Hand-written; a sibling branch (0006) also descends from 0005 and the app upgrades to all heads.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _document_columns() -> list[sa.Column]:
    return [
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("resource_group_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", _JSON, nullable=False),
    ]


def _create(table: str, *extra: sa.Column) -> None:
    op.create_table(
        table,
        *_document_columns(),
        *extra,
        sa.PrimaryKeyConstraint("seq", name=f"pk_{table}"),
        sa.UniqueConstraint("id", name=f"uq_{table}_id"),
    )
    op.create_index(f"ix_{table}_resource_group_id", table, ["resource_group_id"], unique=False)


def upgrade() -> None:
    _create("storages")
    _create("storage_snapshots", sa.Column("volume_id", sa.String(length=64), nullable=False))
    op.create_index("ix_storage_snapshots_volume_id", "storage_snapshots", ["volume_id"], unique=False)
    _create("storage_affinity_groups")


def downgrade() -> None:
    op.drop_index("ix_storage_snapshots_volume_id", table_name="storage_snapshots")
    for table in ("storage_affinity_groups", "storage_snapshots", "storages"):
        op.drop_index(f"ix_{table}_resource_group_id", table_name=table)
        op.drop_table(table)

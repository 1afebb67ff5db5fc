"""compute: computes, compute snapshots, compute affinity groups; merges the 0006/0007/0008 heads

Revision ID: 0009
Revises: 0006, 0007, 0008
Create Date: 2026-11-25 23:20:00

Hand-written.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = ("0006", "0007", "0008")
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
    _create(
        "computes",
        sa.Column("compute_name", sa.String(length=255), nullable=True),
        sa.Column("host_id", sa.String(length=64), nullable=True),
        sa.Column("zone_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
    )
    for column in ("compute_name", "host_id", "zone_id", "state"):
        op.create_index(f"ix_computes_{column}", "computes", [column], unique=False)
    _create("compute_snapshots", sa.Column("compute_id", sa.String(length=64), nullable=False))
    op.create_index("ix_compute_snapshots_compute_id", "compute_snapshots", ["compute_id"], unique=False)
    _create("compute_affinity_groups")


def downgrade() -> None:
    for column in ("compute_name", "host_id", "zone_id", "state"):
        op.drop_index(f"ix_computes_{column}", table_name="computes")
    op.drop_index("ix_compute_snapshots_compute_id", table_name="compute_snapshots")
    for table in ("compute_affinity_groups", "compute_snapshots", "computes"):
        op.drop_index(f"ix_{table}_resource_group_id", table_name=table)
        op.drop_table(table)

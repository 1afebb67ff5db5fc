"""performance: PM jobs, thresholds, reports

Revision ID: 0011
Revises: 0009
Create Date: 2026-11-26 00:30:00

Hand-written.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0009"
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


def _create(table: str, *extra: sa.Column | sa.Constraint) -> None:
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
        "pm_jobs",
        sa.Column("all_groups", sa.Boolean(), nullable=False),
        sa.Column("finished", sa.Boolean(), nullable=False),
    )
    _create("pm_thresholds", sa.Column("crossing_state", _JSON, nullable=False))
    _create(
        "pm_reports",
        sa.Column("pm_job_id", sa.String(length=64), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("pm_job_id", "period_end", name="uq_pm_reports_job_period_end"),
    )
    op.create_index("ix_pm_reports_job_seq", "pm_reports", ["pm_job_id", "seq"], unique=False)
    op.create_index("ix_pm_reports_expires_at", "pm_reports", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_pm_reports_expires_at", table_name="pm_reports")
    op.drop_index("ix_pm_reports_job_seq", table_name="pm_reports")
    for table in ("pm_reports", "pm_thresholds", "pm_jobs"):
        op.drop_index(f"ix_{table}_resource_group_id", table_name=table)
        op.drop_table(table)

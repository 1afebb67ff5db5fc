"""placement journal: replicas on PostgreSQL replay each other's placement changes

Revision ID: 0012
Revises: 0009
Create Date: 2026-11-25 23:50:00

Hand-written.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "placement_journal",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("claim", _JSON, nullable=True),
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_placement_journal"),
    )
    op.create_index("ix_placement_journal_created_at", "placement_journal", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_placement_journal_created_at", table_name="placement_journal")
    op.drop_table("placement_journal")

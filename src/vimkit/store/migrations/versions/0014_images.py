"""images: the software image registry

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 02:00:00

Hand-written; checked against ``Base.metadata`` with alembic's ``compare_metadata``
(tests/api/test_images.py).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("resource_group_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", _JSON, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("is_shared", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_images"),
        sa.UniqueConstraint("id", name="uq_images_id"),
    )
    op.create_index("ix_images_resource_group_id", "images", ["resource_group_id"], unique=False)
    op.create_index("ix_images_name", "images", ["name"], unique=False)
    op.create_index("ix_images_is_shared", "images", ["is_shared"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_images_is_shared", table_name="images")
    op.drop_index("ix_images_name", table_name="images")
    op.drop_index("ix_images_resource_group_id", table_name="images")
    op.drop_table("images")

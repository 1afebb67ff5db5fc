"""compute metadata index: one row per compute and metadata key

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 07:20:00

Hand-written; checked against ``Base.metadata`` with alembic's ``compare_metadata``
(tests/unit/test_migrations.py).

``(eq,metadata/<key>,<value>)`` on computes read every document's metadata; ``compute_metadata``
answers it from an index (see ``vimkit.store.map_index``). The upgrade fills it from the
computes' ``body.metadata``, read in batches of ``_BATCH`` computes in ``seq`` order. The digest
function is repeated here (migrations import no application code) and must stay equal to
``vimkit.store.map_index.value_digest``.
"""

import hashlib

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 2000


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass")).digest()[:8].hex()


def upgrade() -> None:
    op.create_table(
        "compute_metadata",
        sa.Column("compute_seq", _SEQ, autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.Column("value_digest", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["compute_seq"], ["computes.seq"], name="fk_compute_metadata_compute_seq_computes",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("compute_seq", "key", name="pk_compute_metadata"),
    )
    op.create_index("ix_compute_metadata_lookup", "compute_metadata", ["key", "value_digest", "compute_seq"],
                    unique=False)
    _backfill()


def _backfill() -> None:
    bind = op.get_bind()
    computes = sa.table("computes", sa.column("seq", _SEQ), sa.column("body", _JSON))
    entries = sa.table("compute_metadata", sa.column("compute_seq", _SEQ), sa.column("key", sa.String),
                       sa.column("value", sa.String), sa.column("value_digest", sa.String))
    after = 0
    while True:
        rows = bind.execute(sa.select(computes.c.seq, computes.c.body).where(computes.c.seq > after)
                            .order_by(computes.c.seq).limit(_BATCH)).all()
        if not rows:
            return
        batch = []
        for seq, body in rows:
            metadata = body.get("metadata") if isinstance(body, dict) else None
            if not isinstance(metadata, dict):
                continue
            # What the API can store: string keys of 1..255 characters, string values up to 1024.
            batch.extend({"compute_seq": seq, "key": key, "value": value, "value_digest": _digest(value)}
                         for key, value in metadata.items()
                         if isinstance(key, str) and isinstance(value, str) and 0 < len(key) <= 255
                         and len(value) <= 1024)
        if batch:
            bind.execute(entries.insert(), batch)
        after = rows[-1].seq


def downgrade() -> None:
    op.drop_index("ix_compute_metadata_lookup", table_name="compute_metadata")
    op.drop_table("compute_metadata")

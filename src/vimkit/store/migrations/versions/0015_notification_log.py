"""notification log: one row per notification instead of one per subscriber

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 04:40:00

Hand-written; checked against ``Base.metadata`` with alembic's ``compare_metadata``
(tests/api/test_notification_log.py).

The outbox row stays after fan-out as the shared log (``position``); a subscription keeps only
the sequence and log position it has acknowledged. Deliveries still pending are carried over as
log rows meant for their subscription alone, with the body they were going to be sent, so an
upgrade loses none of them. The downgrade drops the pending notifications: per-delivery rows
cannot be rebuilt without the subscription filters' code.
"""

import uuid

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("subscription_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
        batch_op.create_index(batch_op.f("ix_notification_outbox_position"), ["position"], unique=True)
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acked_sequence", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("acked_position", sa.BigInteger(), nullable=True))
    _carry_over_pending()
    op.drop_table("notification_deliveries")


def _carry_over_pending() -> None:
    bind = op.get_bind()
    subscriptions = sa.table("subscriptions", sa.column("id", sa.String), sa.column("api", sa.String),
                             sa.column("next_sequence", sa.BigInteger), sa.column("acked_sequence", sa.BigInteger),
                             sa.column("acked_position", sa.BigInteger))
    deliveries = sa.table("notification_deliveries", sa.column("subscription_id", sa.String),
                          sa.column("sequence", sa.BigInteger), sa.column("body", sa.LargeBinary),
                          sa.column("delivered", sa.Boolean), sa.column("created_at", sa.DateTime(timezone=True)))
    outbox = sa.table("notification_outbox", sa.column("id", sa.String), sa.column("api", sa.String),
                      sa.column("notification_type", sa.String), sa.column("audience", _JSON),
                      sa.column("facets", _JSON), sa.column("payload", _JSON),
                      sa.column("created_at", sa.DateTime(timezone=True)), sa.column("fanned_out", sa.Boolean),
                      sa.column("position", sa.BigInteger), sa.column("subscription_id", sa.String),
                      sa.column("body", sa.LargeBinary))
    # Nothing pending: acknowledged up to the last sequence handed out, anchored at the next match.
    bind.execute(subscriptions.update().values(acked_sequence=subscriptions.c.next_sequence - 1))
    first_pending = dict(bind.execute(
        sa.select(deliveries.c.subscription_id, sa.func.min(deliveries.c.sequence))
        .where(deliveries.c.delivered.is_(False)).group_by(deliveries.c.subscription_id)
    ).all())
    if not first_pending:
        return
    apis = dict(bind.execute(sa.select(subscriptions.c.id, subscriptions.c.api)).all())
    position = 0
    for subscription_id in sorted(first_pending):
        if subscription_id not in apis:
            continue
        first = first_pending[subscription_id]
        # Delivery is in order, so everything from the first undelivered one on is still to send.
        rows = bind.execute(
            sa.select(deliveries.c.sequence, deliveries.c.body, deliveries.c.created_at)
            .where(deliveries.c.subscription_id == subscription_id, deliveries.c.sequence >= first)
            .order_by(deliveries.c.sequence)
        ).all()
        bind.execute(subscriptions.update().where(subscriptions.c.id == subscription_id)
                     .values(acked_sequence=first - 1, acked_position=position))
        for row in rows:
            position += 1
            bind.execute(outbox.insert().values(
                id=str(uuid.uuid4()), api=apis[subscription_id], notification_type="carried-over", audience=None,
                facets={}, payload={}, created_at=row.created_at, fanned_out=True, position=position,
                subscription_id=subscription_id, body=bytes(row.body),
            ))


def downgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint("subscription_id", "sequence", name="uq_delivery_subscription_sequence"),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_pending", ["subscription_id", "delivered", "sequence"], unique=False)
    op.execute("DELETE FROM notification_outbox WHERE fanned_out")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("acked_position")
        batch_op.drop_column("acked_sequence")
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_outbox_position"))
        batch_op.drop_column("body")
        batch_op.drop_column("subscription_id")
        batch_op.drop_column("position")

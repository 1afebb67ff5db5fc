"""Fan-out: turn committed outbox rows into numbered deliveries, one per matching subscription.

Runs in one write transaction per batch. On PostgreSQL a transaction-level advisory lock lets
one replica at a time do it, so the per-subscription sequences never collide; on SQLite the
process-wide write lock already serialises it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import bindparam, delete, insert, select, text, update

from vimkit.notify.filters import matches
from vimkit.store.db import Database
from vimkit.store.models import DeliveryRow, OutboxRow, SubscriptionRow
from vimkit.store.repository import utcnow

FANOUT_LOCK_KEY = 0x76696D6B  # "vimk"
BATCH = 500


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery written by fan-out, handed to the delivery loop without reading it back."""

    row_id: int
    sequence: int
    body: bytes
    committed_ns: int


def fan_out_once(database: Database, base_url: str) -> tuple[dict[str, list[Pending]], bool]:
    """One batch; returns the new deliveries per subscription and whether more rows wait."""
    produced: dict[str, list[Pending]] = {}
    with database.write() as session:
        if database.dialect == "postgresql":
            locked = session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FANOUT_LOCK_KEY})
            if not locked.scalar():
                return produced, False
        events = session.execute(
            select(
                OutboxRow.seq, OutboxRow.id, OutboxRow.api, OutboxRow.notification_type,
                OutboxRow.audience, OutboxRow.facets, OutboxRow.payload,
            ).order_by(OutboxRow.seq).limit(BATCH)
        ).all()
        if not events:
            return produced, False
        apis = {event.api for event in events}
        subscriptions = session.execute(
            select(
                SubscriptionRow.id, SubscriptionRow.api, SubscriptionRow.resource_group_id,
                SubscriptionRow.all_groups, SubscriptionRow.body, SubscriptionRow.next_sequence,
            ).where(SubscriptionRow.api.in_(apis)).order_by(SubscriptionRow.seq)
        ).all()
        next_sequence = {sub.id: sub.next_sequence for sub in subscriptions}
        now = utcnow()
        now_ns = time.time_ns()
        stamp = now.isoformat().replace("+00:00", "Z")
        rows: list[dict[str, object]] = []
        for event in events:
            for sub in subscriptions:
                if sub.api != event.api:
                    continue
                if not sub.all_groups and event.audience is not None and sub.resource_group_id not in event.audience:
                    continue
                if not matches(sub.body.get("filter") or {}, event.facets):
                    continue
                sequence = next_sequence[sub.id]
                next_sequence[sub.id] = sequence + 1
                body = {
                    "id": event.id,
                    "notificationType": event.notification_type,
                    "subscriptionId": sub.id,
                    "timeStamp": stamp,
                    "sequence": sequence,
                    **event.payload,
                    # The notification's own links (a report, the alarm list) stay next to the subscription's.
                    "_links": {**(event.payload.get("_links") or {}),
                               "subscription": {"href": f"{base_url}/{sub.api}/v1/subscriptions/{sub.id}"}},
                }
                rows.append({
                    "subscription_id": sub.id,
                    "sequence": sequence,
                    "notification_id": event.id,
                    "body": orjson.dumps(body),
                    "delivered": False,
                    "attempts": 0,
                    "created_at": now,
                    "committed_at_ns": now_ns,
                })
        if rows:
            deliveries = DeliveryRow.__table__
            inserted = session.execute(
                insert(deliveries).returning(deliveries.c.seq, sort_by_parameter_order=True), rows
            ).scalars().all()
            for row_id, row in zip(inserted, rows, strict=True):
                produced.setdefault(str(row["subscription_id"]), []).append(
                    Pending(int(row_id), int(row["sequence"]), row["body"], now_ns)  # type: ignore[arg-type]
                )
            # Sorted, so that concurrent writers lock subscription rows in one order (no deadlock).
            touched = [{"sid": sid, "nxt": next_sequence[sid]} for sid in sorted(produced)]
            table = SubscriptionRow.__table__
            session.execute(
                update(table).where(table.c.id == bindparam("sid")).values(next_sequence=bindparam("nxt")),
                touched,
            )
        session.execute(delete(OutboxRow).where(OutboxRow.seq.in_([event.seq for event in events])))
    return produced, len(events) == BATCH

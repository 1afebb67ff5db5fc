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
    """A delivery written by fan-out, handed to the delivery loop without reading it back.

    A delivery is identified by its subscription and ``sequence`` (unique together).
    """

    sequence: int
    body: bytes
    committed_ns: int


_HEADER_KEYS = frozenset({"id", "notificationType", "subscriptionId", "timeStamp", "sequence", "_links"})


class _Bodies:
    """The JSON of one notification for each subscription, serialised once.

    Only ``subscriptionId``, ``sequence`` and the subscription link differ between
    subscriptions: the rest is serialised once per notification and the pieces are joined.
    The result is the same document as ``orjson.dumps`` of :meth:`document`.
    """

    def __init__(self, event_id: str, notification_type: str, stamp: str, payload: dict[str, object]) -> None:
        self.event_id = event_id
        self.notification_type = notification_type
        self.stamp = stamp
        self.payload = payload
        links = payload.get("_links") or {}
        # A payload that redefines a header member keeps the general (slower) path.
        self.spliced = (isinstance(links, dict) and "subscription" not in links
                        and not (_HEADER_KEYS - {"_links"}) & payload.keys())
        if self.spliced:
            head = orjson.dumps({"id": event_id, "notificationType": notification_type})[:-1]
            self.head = head
            self.stamp_part = b',"timeStamp":' + orjson.dumps(stamp) + b',"sequence":'
            rest = orjson.dumps({key: value for key, value in payload.items() if key != "_links"})[1:-1]
            inner_links = orjson.dumps(links)[1:-1]
            self.middle = (b"," + rest if rest else b"") + b',"_links":{' + (inner_links + b"," if inner_links else b"")

    def document(self, subscription_id: str, sequence: int, href: str) -> dict[str, object]:
        return {
            "id": self.event_id,
            "notificationType": self.notification_type,
            "subscriptionId": subscription_id,
            "timeStamp": self.stamp,
            "sequence": sequence,
            **self.payload,
            # The notification's own links (a report, the alarm list) stay next to the subscription's.
            "_links": {**(self.payload.get("_links") or {}), "subscription": {"href": href}},  # type: ignore[dict-item]
        }

    def body(self, subscription_id: str, sequence: int, href: str, subscription_part: bytes, link_part: bytes) -> bytes:
        if not self.spliced:
            return orjson.dumps(self.document(subscription_id, sequence, href))
        return b"".join((self.head, subscription_part, self.stamp_part, str(sequence).encode(), self.middle,
                         link_part))


def fan_out_once(database: Database, base_url: str) -> tuple[dict[str, list[Pending]], bool]:
    """One batch; returns the new deliveries per subscription and whether more rows wait."""
    produced: dict[str, list[Pending]] = {}
    # A read first: on SQLite it never waits, while a write transaction takes the database lock
    # that the API (and, with delivery workers, the other processes) need.
    with database.read() as session:
        if session.scalar(select(OutboxRow.seq).limit(1)) is None:
            return produced, False
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
        parts: dict[str, tuple[str, bytes, bytes]] = {}
        for sub in subscriptions:
            href = f"{base_url}/{sub.api}/v1/subscriptions/{sub.id}"
            parts[sub.id] = (href, b',"subscriptionId":' + orjson.dumps(sub.id),
                             b'"subscription":{"href":' + orjson.dumps(href) + b"}}}")
        for event in events:
            bodies = _Bodies(event.id, event.notification_type, stamp, event.payload)
            for sub in subscriptions:
                if sub.api != event.api:
                    continue
                if not sub.all_groups and event.audience is not None and sub.resource_group_id not in event.audience:
                    continue
                if not matches(sub.body.get("filter") or {}, event.facets):
                    continue
                sequence = next_sequence[sub.id]
                next_sequence[sub.id] = sequence + 1
                href, subscription_part, link_part = parts[sub.id]
                rows.append({
                    "subscription_id": sub.id,
                    "sequence": sequence,
                    "notification_id": event.id,
                    "body": bodies.body(sub.id, sequence, href, subscription_part, link_part),
                    "delivered": False,
                    "attempts": 0,
                    "created_at": now,
                    "committed_at_ns": now_ns,
                })
        if rows:
            # Plain executemany: the deliveries are known by (subscription, sequence), no ids to read back.
            session.execute(insert(DeliveryRow.__table__), rows)
            for row in rows:
                produced.setdefault(str(row["subscription_id"]), []).append(
                    Pending(int(row["sequence"]), row["body"], now_ns)  # type: ignore[arg-type]
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

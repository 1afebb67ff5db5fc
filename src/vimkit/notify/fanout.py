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
from sqlalchemy.orm import Session

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


_COLUMNS = ("subscription_id", "sequence", "notification_id", "body", "delivered", "attempts", "created_at",
            "committed_at_ns")


def _insert_deliveries(session: Session, rows: list[dict[str, object]]) -> None:
    """One executemany straight to the driver: the deliveries are known by (subscription,
    sequence), so no ids are read back, and the values are already what the driver takes except
    the timestamp, shared by the batch and converted once (SQLAlchemy's per-row parameter
    processing was a tenth of a delivery worker's time)."""
    connection = session.connection()
    dialect = connection.dialect
    table = DeliveryRow.__table__
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        session.execute(insert(table), rows)
        return
    convert = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    created = rows[0]["created_at"]
    created = convert(created) if convert else created
    statement = f"INSERT INTO {table.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join([marker] * len(_COLUMNS))})"
    connection.exec_driver_sql(statement, [
        (row["subscription_id"], row["sequence"], row["notification_id"], row["body"], False, 0, created,
         row["committed_at_ns"]) for row in rows
    ])


# Built once: statements on the tables (not the mapped classes) skip the ORM's per-execution work
# and keep their cache key, which mattered at one fan-out per commit.
_OUTBOX = OutboxRow.__table__
_SUBSCRIPTIONS = SubscriptionRow.__table__
_ANY_EVENT = select(_OUTBOX.c.seq).limit(1)
_EVENTS = select(
    _OUTBOX.c.seq, _OUTBOX.c.id, _OUTBOX.c.api, _OUTBOX.c.notification_type, _OUTBOX.c.audience, _OUTBOX.c.facets,
    _OUTBOX.c.payload,
).order_by(_OUTBOX.c.seq).limit(BATCH)
_MATCHING = select(
    _SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.api, _SUBSCRIPTIONS.c.resource_group_id, _SUBSCRIPTIONS.c.all_groups,
    _SUBSCRIPTIONS.c.body, _SUBSCRIPTIONS.c.next_sequence,
).where(_SUBSCRIPTIONS.c.api.in_(bindparam("apis", expanding=True))).order_by(_SUBSCRIPTIONS.c.seq)
_SET_NEXT = update(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id == bindparam("sid")).values(next_sequence=bindparam("nxt"))
_DONE = delete(_OUTBOX).where(_OUTBOX.c.seq.in_(bindparam("seqs", expanding=True)))


def fan_out_once(database: Database, base_url: str) -> tuple[dict[str, list[Pending]], bool]:
    """One batch; returns the new deliveries per subscription and whether more rows wait."""
    produced: dict[str, list[Pending]] = {}
    # A read first: on SQLite it never waits, while a write transaction takes the database lock
    # that the API (and, with delivery workers, the other processes) need.
    with database.read() as session:
        if session.connection().execute(_ANY_EVENT).first() is None:
            return produced, False
    with database.write() as session:
        connection = session.connection()
        if database.dialect == "postgresql":
            locked = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FANOUT_LOCK_KEY})
            if not locked.scalar():
                return produced, False
        events = connection.execute(_EVENTS).all()
        if not events:
            return produced, False
        apis = sorted({event.api for event in events})
        subscriptions = connection.execute(_MATCHING, {"apis": apis}).all()
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
            _insert_deliveries(session, rows)
            for row in rows:
                produced.setdefault(str(row["subscription_id"]), []).append(
                    Pending(int(row["sequence"]), row["body"], now_ns)  # type: ignore[arg-type]
                )
            # Sorted, so that concurrent writers lock subscription rows in one order (no deadlock).
            connection.execute(_SET_NEXT, [{"sid": sid, "nxt": next_sequence[sid]} for sid in sorted(produced)])
        connection.execute(_DONE, {"seqs": [event.seq for event in events]})
    return produced, len(events) == BATCH

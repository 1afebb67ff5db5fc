"""Fan-out: give committed outbox rows their place in the notification log and number them for
each matching subscription.

The outbox row itself becomes the log entry (``position``); nothing is written per subscriber
except its ``next_sequence``. A subscription's n-th notification is the n-th log entry its
filter matches after its acknowledged anchor (``acked_sequence`` at ``acked_position``), so
the numbering can be recomputed from the log at any time (:func:`replay`) and is the same as the
one fan-out hands to the delivery loop in memory. Subscriptions are never modified, only
created and deleted, so matching a log entry gives the same answer whenever it is done.

Runs in one write transaction per batch. On PostgreSQL a transaction-level advisory lock lets
one replica at a time do it, so positions and sequences never collide; on SQLite the
process-wide write lock already serialises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.engine import Connection

from vimkit.notify.filters import matches
from vimkit.store.db import Database
from vimkit.store.models import OutboxRow, SubscriptionRow
from vimkit.store.prepared import Prepared

FANOUT_LOCK_KEY = 0x76696D6B  # "vimk"
BATCH = 500
#: Rows fanned out on the event loop at once (about 40 µs of the loop's time each).
INLINE_BATCH = 64
_SCAN = 500


@dataclass(frozen=True, slots=True)
class Pending:
    """A notification for one subscription: its ``sequence``, the JSON to post, when the change
    was committed (for the latency metric) and its log ``position`` (what an acknowledgement
    records, so that the numbering can resume from there)."""

    sequence: int
    body: bytes
    committed_ns: int
    position: int


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


class Audience:
    """What fan-out and replay need of a subscription to match log entries and build bodies."""

    __slots__ = ("id", "api", "group", "all_groups", "filter", "href", "subscription_part", "link_part")

    def __init__(self, subscription_id: str, api: str, group: str, all_groups: bool, body: dict[str, Any],
                 base_url: str) -> None:
        self.id = subscription_id
        self.api = api
        self.group = group
        self.all_groups = all_groups
        self.filter = body.get("filter") or {}
        self.href = f"{base_url}/{api}/v1/subscriptions/{subscription_id}"
        self.subscription_part = b',"subscriptionId":' + orjson.dumps(subscription_id)
        self.link_part = b'"subscription":{"href":' + orjson.dumps(self.href) + b"}}}"

    def wants(self, event: Any) -> bool:
        if event.subscription_id is not None:  # carried over by migration 0015, for one subscription
            return bool(event.subscription_id == self.id)
        if event.api != self.api:
            return False
        if not self.all_groups and event.audience is not None and self.group not in event.audience:
            return False
        return matches(self.filter, event.facets)

    def body(self, bodies: _Bodies, sequence: int) -> bytes:
        return bodies.body(self.id, sequence, self.href, self.subscription_part, self.link_part)


def _stamp(event: Any) -> tuple[str, int]:
    """The notification's timeStamp (the change's time, the same in fan-out and replay) and ns."""
    created = event.created_at
    return created.isoformat().replace("+00:00", "Z"), int(created.timestamp() * 1e9)


def _bodies(event: Any) -> _Bodies:
    return _Bodies(event.id, event.notification_type, _stamp(event)[0], event.payload)


# Built once: statements on the tables (not the mapped classes) skip the ORM's per-execution work
# and keep their cache key, which mattered at one fan-out per commit.
_OUTBOX = OutboxRow.__table__
_SUBSCRIPTIONS = SubscriptionRow.__table__
_COLUMNS = (_OUTBOX.c.seq, _OUTBOX.c.id, _OUTBOX.c.api, _OUTBOX.c.notification_type, _OUTBOX.c.audience,
            _OUTBOX.c.facets, _OUTBOX.c.payload, _OUTBOX.c.created_at, _OUTBOX.c.subscription_id)
_ANY_EVENT = select(_OUTBOX.c.seq).where(_OUTBOX.c.fanned_out.is_(False)).limit(1)
# Run on the driver's cursor (vimkit.store.prepared): through Connection.execute, SQLAlchemy's own
# work for these three statements was about 40 % of a fan-out on the loop.
_EVENTS_QUERY = select(*_COLUMNS).where(_OUTBOX.c.fanned_out.is_(False)).order_by(_OUTBOX.c.seq)
_EVENTS = Prepared(_EVENTS_QUERY.limit(BATCH))
_INLINE_EVENTS = Prepared(_EVENTS_QUERY.limit(INLINE_BATCH))
_TOP = Prepared(select(func.max(_OUTBOX.c.position)))
_MATCHING = Prepared(select(_SUBSCRIPTIONS.c.seq, _SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.next_sequence).where(
    _SUBSCRIPTIONS.c.api == bindparam("api")))  # one API at a time: an IN list would not be prepared
# Only for subscriptions fan-out has not seen yet (the documents are most of a row to decode).
_DESCRIBED = select(
    _SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.api, _SUBSCRIPTIONS.c.resource_group_id, _SUBSCRIPTIONS.c.all_groups,
    _SUBSCRIPTIONS.c.body,
).where(_SUBSCRIPTIONS.c.id.in_(bindparam("ids", expanding=True)))
_PLACE = (update(_OUTBOX).where(_OUTBOX.c.seq == bindparam("s"))
          .values(fanned_out=True, position=bindparam("p")))
# A subscription with nothing pending has no anchor (None); it gets one just before its first match.
_SET_NEXT = (update(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id == bindparam("sid"))
             .values(next_sequence=bindparam("nxt"),
                     acked_position=func.coalesce(_SUBSCRIPTIONS.c.acked_position, bindparam("anchor"))))
_LOG = select(*_COLUMNS, _OUTBOX.c.position, _OUTBOX.c.body).where(
    _OUTBOX.c.position > bindparam("after"),
    _OUTBOX.c.api == bindparam("api"),  # carried-over entries have their subscription's api too
).order_by(_OUTBOX.c.position).limit(_SCAN)


_COMPILED: dict[tuple[int, str], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def execute_many(connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """An executemany straight to the driver, for parameters that are already what it takes
    (ints, strings): SQLAlchemy's per-row parameter processing was a tenth of fan-out and of
    the acknowledgement flush, which write one row per subscription each time."""
    dialect = connection.dialect
    key = (id(statement), dialect.name)
    found = _COMPILED.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        order = tuple(compiled.positiontup) if compiled.positional else None  # type: ignore[arg-type]
        # The statement's own values (``state="ACTIVE"``…) are bound parameters too.
        fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        found = _COMPILED[key] = (str(compiled), order, fixed)
    sql, order, fixed = found
    if fixed:
        rows = [{**fixed, **row} for row in rows]
    if order is None:
        connection.exec_driver_sql(sql, rows)  # type: ignore[arg-type]
    else:
        connection.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])


_AUDIENCES: dict[tuple[str, str], Audience] = {}


def _audiences(connection: Connection, ids: list[str], base_url: str) -> list[Audience]:
    """Kept between batches: a subscription never changes, and reading and preparing it again
    each batch was a fifth of fan-out."""
    unknown = [sid for sid in ids if (sid, base_url) not in _AUDIENCES]
    if unknown:
        if len(_AUDIENCES) > 10_000:
            _AUDIENCES.clear()
        for sub in connection.execute(_DESCRIBED, {"ids": unknown}):
            _AUDIENCES[(sub.id, base_url)] = Audience(sub.id, sub.api, sub.resource_group_id, sub.all_groups,
                                                      sub.body, base_url)
    # One deleted between the two reads is left out: its row is gone, so is its numbering.
    return [_AUDIENCES[(sid, base_url)] for sid in ids if (sid, base_url) in _AUDIENCES]


def fan_out_once(database: Database, base_url: str) -> tuple[dict[str, list[Pending]], bool]:
    """One batch; returns the new notifications per subscription and whether more rows wait."""
    # A read first: on SQLite it never waits, while a write transaction takes the database lock
    # that the API (and, with delivery workers, the other processes) need.
    with database.read() as session:
        if session.connection().execute(_ANY_EVENT).first() is None:
            return {}, False
    with database.write() as session:
        connection = session.connection()
        if database.dialect == "postgresql" and not _try_lock(connection):
            return {}, False
        return _fan_out_in(connection, base_url, _EVENTS, BATCH)


def fan_out_here(database: Database, base_url: str) -> tuple[dict[str, list[Pending]], bool] | None:
    """:func:`fan_out_once` for at most :data:`INLINE_BATCH` rows on the calling thread — the event
    loop's — when the SQLite writer is free; None otherwise (and always on PostgreSQL). A worker
    thread's fan-out costs more CPU than the same work on the loop: it gives up the GIL in every
    SQLite call and must win it back from the busy loop each time."""
    with database.write_if_free() as session:
        if session is None:
            return None
        return _fan_out_in(session.connection(), base_url, _INLINE_EVENTS, INLINE_BATCH)


def _fan_out_in(connection: Connection, base_url: str, query: Prepared, limit: int
                ) -> tuple[dict[str, list[Pending]], bool]:
    produced: dict[str, list[Pending]] = {}
    events = query.all(connection)
    if not events:
        return produced, False
    top = int(_TOP.first(connection)[0] or 0)
    subscriptions = sorted((sub for api in {event.api for event in events}
                            for sub in _MATCHING.all(connection, {"api": api})), key=lambda sub: sub.seq)
    audiences = _audiences(connection, [sub.id for sub in subscriptions], base_url)
    next_sequence = {sub.id: sub.next_sequence for sub in subscriptions}
    anchors: dict[str, int] = {}
    placed = []
    for offset, event in enumerate(events):
        position = top + 1 + offset
        placed.append({"s": event.seq, "p": position})
        bodies: _Bodies | None = None  # serialised only for an event some subscription wants
        for sub in audiences:
            if not sub.wants(event):
                continue
            if bodies is None:
                stamp, committed_ns = _stamp(event)
                bodies = _Bodies(event.id, event.notification_type, stamp, event.payload)
            sequence = next_sequence[sub.id]
            next_sequence[sub.id] = sequence + 1
            anchors.setdefault(sub.id, position - 1)
            produced.setdefault(sub.id, []).append(Pending(sequence, sub.body(bodies, sequence), committed_ns, position))
    execute_many(connection, _PLACE, placed)
    if produced:
        # Sorted, so that concurrent writers lock subscription rows in one order (no deadlock).
        execute_many(connection, _SET_NEXT, [{"sid": sid, "nxt": next_sequence[sid], "anchor": anchors[sid]}
                                             for sid in sorted(produced)])
    return produced, len(events) == limit


def _try_lock(connection: Connection) -> bool:
    locked = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FANOUT_LOCK_KEY})
    return bool(locked.scalar())


def replay(connection: Connection, audience: Audience, anchor: tuple[int, int], from_sequence: int,
           limit: int) -> list[Pending]:
    """Up to ``limit`` notifications of ``audience`` numbered ``from_sequence`` on, read back
    from the log: counting its matches after ``anchor`` (a sequence and the log position of that
    notification, e.g. the acknowledged ones) gives each its sequence."""
    sequence, after = anchor
    found: list[Pending] = []
    while len(found) < limit:
        rows = connection.execute(_LOG, {"after": after, "api": audience.api}).all()
        for event in rows:
            after = event.position
            if not audience.wants(event):
                continue
            sequence += 1
            if sequence < from_sequence:
                continue
            if event.body is not None:
                body = bytes(event.body)
            else:
                body = audience.body(_bodies(event), sequence)
            found.append(Pending(sequence, body, _stamp(event)[1], event.position))
            if len(found) >= limit:
                break
        if len(rows) < _SCAN:
            break
    return found


# Per API, the lowest anchor of a subscription with something pending: the log before it is
# needed by nobody. A subscription with nothing pending needs none of the log there is (what
# it will match has not been fanned out yet), whatever its anchor.
_NEEDED_FROM = (select(_SUBSCRIPTIONS.c.api, func.min(_SUBSCRIPTIONS.c.acked_position))
                .where(_SUBSCRIPTIONS.c.acked_sequence + 1 < _SUBSCRIPTIONS.c.next_sequence)
                .group_by(_SUBSCRIPTIONS.c.api))


def prune(database: Database, older_than: datetime) -> int:
    """Delete log entries every subscription is past and created before ``older_than``."""
    removed = 0
    with database.write() as session:
        connection = session.connection()
        # Under the fan-out lock: no subscription can get something pending meanwhile.
        if database.dialect == "postgresql" and not _try_lock(connection):
            return 0
        bounds = {api: int(bound or 0) for api, bound in connection.execute(_NEEDED_FROM)}
        old = _OUTBOX.c.fanned_out.is_(True) & (_OUTBOX.c.created_at < older_than)
        removed += connection.execute(delete(_OUTBOX).where(old, _OUTBOX.c.api.not_in(sorted(bounds)))).rowcount
        for api, bound in sorted(bounds.items()):
            removed += connection.execute(
                delete(_OUTBOX).where(old, _OUTBOX.c.api == api, _OUTBOX.c.position <= bound)).rowcount
    return removed

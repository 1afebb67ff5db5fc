"""The shared notification log (migration 0015): fan-out numbers, replay numbers the same,
pruning keeps what a subscription still needs, and an upgrade carries pending deliveries over."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import column, select, table, text, update

from vimkit.notify.fanout import Audience, fan_out_once, prune, replay
from vimkit.notify.outbox import emit, information_change
from vimkit.store.db import Database
from vimkit.store.migrate import upgrade
from vimkit.store.models import OutboxRow, SubscriptionRow
from vimkit.store.repository import utcnow

BASE = "http://vim"


def _subscribe(database: Database, sid: str, api: str, group: str = "g1", all_groups: bool = False,
               flt: dict[str, Any] | None = None) -> Audience:
    now = utcnow()
    body = {"id": sid, "callbackUri": "http://127.0.0.1:9/cb", "filter": flt}
    with database.write() as session:
        session.add(SubscriptionRow(id=sid, resource_group_id=group, created_at=now, updated_at=now, version=1,
                                    body=body, api=api, consumer_id="c", all_groups=all_groups,
                                    callback_uri=body["callbackUri"], state="ACTIVE", next_sequence=1,
                                    consecutive_failures=0, acked_sequence=0))
    return Audience(sid, api, group, all_groups, body, BASE)


def _anchor(database: Database, sid: str) -> tuple[int, int | None, int]:
    with database.read() as session:
        row = session.execute(select(SubscriptionRow.acked_sequence, SubscriptionRow.acked_position,
                                     SubscriptionRow.next_sequence).where(SubscriptionRow.id == sid)).one()
    return row.acked_sequence, row.acked_position, row.next_sequence


def _emit_some(database: Database, start: int, count: int) -> None:
    with database.write() as session:
        for index in range(start, start + count):
            information_change(session, api="compute-info", resource_type_id=f"f{index}",
                               change_type="ADDITION" if index % 3 else "REMOVAL", vim_id="v",
                               changed_resource_data=None, audience=None if index % 2 else ["g2"])
            emit(session, api="faults", notification_type="AlarmNotification", payload={"alarm": {"n": index}},
                 audience=None, resource_id=f"a{index}")


def _fan_out_all(database: Database) -> dict[str, list[Any]]:
    produced: dict[str, list[Any]] = {}
    more = True
    while more:
        batch, more = fan_out_once(database, BASE)
        for sid, items in batch.items():
            produced.setdefault(sid, []).extend(items)
    return produced


def test_replay_numbers_as_fan_out_did_and_pruning_keeps_what_is_needed(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database)
        _emit_some(database, 0, 5)
        _fan_out_all(database)  # before any subscription: nobody's
        audiences = [
            _subscribe(database, "all", "compute-info"),
            _subscribe(database, "removals", "compute-info", flt={"changeTypes": ["REMOVAL"]}),
            _subscribe(database, "g2", "compute-info", group="g2"),
            _subscribe(database, "admin", "compute-info", all_groups=True),
            _subscribe(database, "alarms", "faults"),
            _subscribe(database, "late", "faults"),
        ]
        _emit_some(database, 5, 40)
        produced = _fan_out_all(database)
        assert [len(produced[a.id]) for a in audiences[:5]] == [20, 6, 40, 40, 40]
        assert len(produced["late"]) == 40  # matched from the first fan-out that sees it
        for audience in audiences:
            acked, position, following = _anchor(database, audience.id)
            assert (acked, following) == (0, len(produced[audience.id]) + 1)
            with database.read() as session:
                replayed = replay(session.connection(), audience, (0, position), 1, 1000)
            assert replayed == produced[audience.id]
            assert [p.sequence for p in replayed] == list(range(1, len(replayed) + 1))
            document = orjson.loads(replayed[0].body)
            assert document["subscriptionId"] == audience.id and document["sequence"] == 1

        # "removals" acknowledged 3 of 6, the others everything: only what "removals" still
        # needs (after its anchor) stays in the log.
        acknowledged = {a.id: produced[a.id][-1] for a in audiences}
        acknowledged["removals"] = produced["removals"][2]
        with database.write() as session:
            for sid, item in acknowledged.items():
                session.execute(update(SubscriptionRow).where(SubscriptionRow.id == sid)
                                .values(acked_sequence=item.sequence, acked_position=item.position))
        assert prune(database, utcnow() - timedelta(hours=1)) == 0  # too young
        removed = prune(database, utcnow() + timedelta(seconds=1))
        with database.read() as session:
            left = session.execute(select(OutboxRow.api, OutboxRow.position).order_by(OutboxRow.position)).all()
        assert removed > 0 and {api for api, _ in left} == {"compute-info"}
        assert min(position for _, position in left) > acknowledged["removals"].position
        with database.read() as session:
            rest = replay(session.connection(), audiences[1], (3, acknowledged["removals"].position), 4, 1000)
        assert rest == produced["removals"][3:]

        # Caught-up subscriptions whose anchors were pruned away number on as fan-out does.
        _emit_some(database, 45, 6)
        more = _fan_out_all(database)
        for audience in audiences:
            acked, position, _ = _anchor(database, audience.id)
            with database.read() as session:
                replayed = replay(session.connection(), audience, (acked, position), acked + 1, 1000)
            expected = (produced["removals"][3:] if audience.id == "removals" else []) + more.get(audience.id, [])
            assert replayed == expected, audience.id
    finally:
        database.dispose()


def test_upgrade_carries_pending_deliveries_over(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database, "0014")
        now = utcnow()
        with database.engine.begin() as connection:
            for sid, next_sequence in (("busy", 5), ("idle", 3)):
                # The table as 0014 left it (the model has the columns 0015 adds).
                columns = SubscriptionRow.__table__.c
                connection.execute(table("subscriptions", *(column(name, columns[name].type) for name in (
                    "id", "resource_group_id", "created_at", "updated_at", "version", "body", "api", "consumer_id",
                    "all_groups", "callback_uri", "state", "next_sequence", "consecutive_failures",
                ))).insert().values(
                    id=sid, resource_group_id="g1", created_at=now, updated_at=now, version=1,
                    body={"id": sid, "callbackUri": "http://127.0.0.1:9/cb"}, api="compute-info", consumer_id="c",
                    all_groups=False, callback_uri="http://127.0.0.1:9/cb", state="ACTIVE",
                    next_sequence=next_sequence, consecutive_failures=0))
            rows = [("busy", 1, True), ("busy", 2, True), ("busy", 3, False), ("busy", 4, False),
                    ("idle", 1, True), ("idle", 2, True)]
            for sid, sequence, delivered in rows:
                connection.execute(text(
                    "INSERT INTO notification_deliveries (subscription_id, sequence, notification_id, body, "
                    "delivered, attempts, created_at, committed_at_ns) VALUES (:s, :q, 'n', :b, :d, 0, :c, 1)"),
                    {"s": sid, "q": sequence, "b": b'{"old": %d}' % sequence, "d": delivered, "c": now})
        upgrade(database)
        assert _anchor(database, "idle") == (2, None, 3)
        acked, position, following = _anchor(database, "busy")
        assert (acked, following) == (2, 5) and position is not None
        busy = Audience("busy", "compute-info", "g1", False, {}, BASE)
        with database.read() as session:
            replayed = replay(session.connection(), busy, (acked, position), 3, 1000)
        assert [(p.sequence, p.body) for p in replayed] == [(3, b'{"old": 3}'), (4, b'{"old": 4}')]

        # New notifications number on after the carried-over ones, for both.
        _emit_some(database, 1, 1)
        produced = _fan_out_all(database)
        assert [p.sequence for p in produced["busy"]] == [5] and [p.sequence for p in produced["idle"]] == [3]
        with database.read() as session:
            replayed = replay(session.connection(), busy, (acked, position), 3, 1000)
        assert [p.sequence for p in replayed] == [3, 4, 5] and replayed[2] == produced["busy"][0]
    finally:
        database.dispose()



def test_latencies_observed_together_are_observed_one_by_one() -> None:
    import random

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from vimkit.notify.dispatcher import _observe_all

    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    one, together = CollectorRegistry(), CollectorRegistry()
    single = Histogram("lat", "l", buckets=buckets, registry=one)
    batch = Histogram("lat", "l", buckets=buckets, registry=together)
    values = [random.choice([0.0, 0.005, 0.0051, 0.25, 30.0, 31.0, 1e9, random.random() * 40]) for _ in range(2000)]
    for value in values:
        single.observe(value)
    _observe_all(batch, values)

    def exposition(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert exposition(one) == exposition(together)


def test_fan_out_on_the_loop_numbers_as_the_thread_does(database_url: str) -> None:
    """``fan_out_here`` (the event loop's fan-out when the SQLite writer is free) takes at most
    INLINE_BATCH rows and numbers them exactly as ``fan_out_once`` numbers the rest."""
    from vimkit.notify.fanout import INLINE_BATCH, fan_out_here

    database = Database(database_url)
    try:
        upgrade(database)
        _subscribe(database, "alarms", "faults")
        _emit_some(database, 0, INLINE_BATCH)  # 2 rows each: one compute-info, one faults
        here = fan_out_here(database, BASE)
        if database.dialect != "sqlite":
            assert here is None  # PostgreSQL always fans out on a worker thread
            return
        assert here is not None
        first, more = here
        assert more and [p.sequence for p in first["alarms"]] == list(range(1, INLINE_BATCH // 2 + 1))
        rest = _fan_out_all(database)
        assert [p.sequence for p in rest["alarms"]] == list(range(INLINE_BATCH // 2 + 1, INLINE_BATCH + 1))
        positions = [p.position for p in first["alarms"] + rest["alarms"]]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert fan_out_here(database, BASE) == ({}, False)
        # While another writer holds the lock, the loop does not wait for it.
        with database.write():
            assert fan_out_here(database, BASE) is None
    finally:
        database.dispose()

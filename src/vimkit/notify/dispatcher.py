"""At-least-once, in-order delivery of notifications to subscribers.

Loops in the server's event loop:

* **fan-out** (see :mod:`vimkit.notify.fanout`) runs after every commit that emitted
  notifications, places them in the shared notification log and hands them, numbered per
  subscription, to this process's per-subscription queues.
* **scheduling** takes a lease on each subscription with due deliveries (a conditional UPDATE,
  atomic on every backend) and starts one task per leased subscription; tasks for different
  subscriptions run concurrently, each posts its notifications strictly in sequence order.
  Leases let replicas share the subscriptions without sending the same attempt twice, and a
  periodic scan picks up work another replica or a crash left behind.
* **acknowledgement flushing** records, in one transaction every few milliseconds, the last
  sequence each subscription acknowledged (and its log position: one row per subscription, not
  one per notification), renews this replica's leases, and releases finished ones. A crash can
  re-send only what was acknowledged but not yet recorded; what is not in memory is read back
  from the log (:func:`vimkit.notify.fanout.replay`).

On failure a subscription backs off exponentially with full jitter; past the give-up horizon it
is marked FAILING, keeps its pending notifications and keeps being retried at the longest
interval, so it resumes by itself when the subscriber comes back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import bindparam, func, or_, select, update

from vimkit.notify.callbacks import TokenCache, auth_headers
from vimkit.notify.fanout import Audience, Pending, execute_many, fan_out_here, fan_out_once, prune, replay
from vimkit.notify.secrets import SecretBox
from vimkit.notify.transport import CallbackClient, CallbackError
from vimkit.store.db import Database
from vimkit.store.models import SubscriptionRow
from vimkit.store.repository import utcnow

log = logging.getLogger("vimkit.notify")

DELIVERED = Counter("vimkit_notifications_delivered_total", "Notifications acknowledged by subscribers", ["api"])
FAILED = Counter("vimkit_notification_delivery_failures_total", "Failed delivery attempts", ["api"])
FAILING = Gauge("vimkit_subscriptions_failing", "Subscriptions whose deliveries keep failing")
LATENCY = Histogram(
    "vimkit_notification_latency_seconds",
    "Commit of the change to acknowledgement by the subscriber",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_RELOAD_BATCH = 200
_FLUSH_INTERVAL = 0.02
_FANOUT_INTERVAL = 0.02
_HOUSEKEEPING_INTERVAL = 30.0
_LINGER_SECONDS = 2.0
_HEADERS = {"Content-Type": "application/json", "Version": "1.0.0"}


# The statements of the acknowledgement flush, built once (on the tables: no ORM work per run).
_SUBSCRIPTIONS = SubscriptionRow.__table__
# Acknowledgements only move forward: a replica whose lease ran out may flush after the one that
# took over recorded more.
_ACKNOWLEDGED = (
    update(_SUBSCRIPTIONS)
    .where(_SUBSCRIPTIONS.c.id == bindparam("sid"), _SUBSCRIPTIONS.c.acked_sequence < bindparam("b_seq"))
    .values(acked_sequence=bindparam("b_seq"), acked_position=bindparam("b_pos"), last_success_at=bindparam("now"),
            consecutive_failures=0, failing_since=None, state="ACTIVE", next_attempt_at=None)
)
_FAILING = select(_SUBSCRIPTIONS.c.id).where(
    _SUBSCRIPTIONS.c.id.in_(bindparam("ids", expanding=True)), _SUBSCRIPTIONS.c.state == "FAILING"
)
_HAS_PENDING = _SUBSCRIPTIONS.c.acked_sequence + 1 < _SUBSCRIPTIONS.c.next_sequence
_MINE = _SUBSCRIPTIONS.c.lease_owner == bindparam("owner")
_RELEASE_ALL = update(_SUBSCRIPTIONS).where(_MINE).values(lease_owner=None, lease_until=None)
_RELEASE = (update(_SUBSCRIPTIONS).where(_SUBSCRIPTIONS.c.id.in_(bindparam("ids", expanding=True)), _MINE)
            .values(lease_owner=None, lease_until=None))
_RENEW = update(_SUBSCRIPTIONS).where(_MINE).values(lease_until=bindparam("until"))


# A thread that holds the database's write lock (fan-out, acknowledgements, the API's commits)
# lets go of the GIL in every SQLite call and then waits up to the switch interval (5 ms by
# default) to get it back from the busy event loop: with several statements per transaction the
# lock was held for tens of milliseconds, and every writer of every process queued behind it.
# Measured at 5,000 notifications/s with one worker: p50 280–700 ms at 5 ms, 25 ms at 1 ms
# (0.5 ms was no better), for the same CPU.
SWITCH_INTERVAL = 0.001


def shorten_switch_interval() -> None:
    """For the processes that deliver, and the server whose writers they share a lock with."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


def _observe_all(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe`` for each value, with one increment per bucket instead of one lock
    and bucket search per notification (a twentieth of a delivery worker's time at thousands per
    second). Falls back on ``observe`` should prometheus_client's internals change."""
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum  # type: ignore[attr-defined]
    except AttributeError:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the last bound is +Inf
    total.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


@dataclass(frozen=True)
class DispatchSettings:
    base_url: str
    vim_id: str
    request_timeout: float = 10.0
    backoff_base: float = 0.5
    backoff_cap: float = 300.0
    give_up_after: float = 86_400.0
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    concurrency: int = 64
    retention_seconds: float = 3600.0


@dataclass
class _Target:
    """What a delivery task needs to know about its subscription."""

    subscription_id: str
    api: str
    callback_uri: str
    authentication: dict[str, Any] | None
    next_sequence: int
    audience: Audience
    # The sequence before next_sequence and its log position: where replay resumes.
    anchor: tuple[int, int] | None


@dataclass
class _Acks:
    # subscription id -> (last acknowledged sequence, its log position); delivery is in order,
    # so the last one acknowledged covers all before it.
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    latencies: list[tuple[str, int]] = field(default_factory=list)  # (api, commit time in ns) per acknowledgement

    def acknowledge(self, subscription_id: str, sequence: int, position: int) -> None:
        known = self.sequences.get(subscription_id)
        if known is None or known[0] < sequence:
            self.sequences[subscription_id] = (sequence, position)


class Dispatcher:
    def __init__(
        self,
        database: Database,
        box: SecretBox,
        settings: DispatchSettings,
        replica_id: str,
        tokens: TokenCache | None = None,
    ) -> None:
        self.database = database
        self.box = box
        self.settings = settings
        self.replica_id = replica_id
        self.tokens = tokens or TokenCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._fanout_wake = asyncio.Event()
        self._schedule_wake = asyncio.Event()
        self._ready: set[str] = set()
        self._queues: dict[str, deque[Pending]] = {}
        # Per subscription, the next sequence this replica will send and the anchor before it.
        self._expected: dict[str, tuple[int, tuple[int, int]]] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._signals: dict[str, asyncio.Event] = {}  # wakes a lingering task when work arrives
        self._acks = _Acks()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: CallbackClient | None = None
        self._token_client: httpx.AsyncClient | None = None
        self._stopping = False
        self._last_renew = time.monotonic()
        # The alarm engine, when fault management is wired: a FAILING subscription is an alarm.
        self.alarms: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        shorten_switch_interval()
        self._fanout_wake = asyncio.Event()
        self._schedule_wake = asyncio.Event()
        # A lean HTTP/1.1 client for the hot path (see vimkit.notify.transport for why).
        self._client = CallbackClient(self.settings.request_timeout)
        self._token_client = httpx.AsyncClient(timeout=self.settings.request_timeout, follow_redirects=False)
        self.database.after_notifications.append(self.wake)
        self._tasks = [
            asyncio.create_task(self._fanout_loop(), name="vimkit-fanout"),
            asyncio.create_task(self._schedule_loop(), name="vimkit-delivery"),
            asyncio.create_task(self._flush_loop(), name="vimkit-acks"),
        ]
        self.wake()

    async def stop(self) -> None:
        self._stopping = True
        if self.wake in self.database.after_notifications:
            self.database.after_notifications.remove(self.wake)
        for task in [*self._active.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._active.values(), *self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._flush, self._take_acks(), True)
        if self._client is not None:
            await self._client.close()
        if self._token_client is not None:
            await self._token_client.aclose()

    def wake(self) -> None:
        """Thread-safe: a transaction that emitted notifications has committed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            # Most commits are the loop's own (group commits): waking it through its self-pipe
            # cost a write, a read and a turn of the loop per commit.
            self._fanout_wake.set()
        else:
            loop.call_soon_threadsafe(self._fanout_wake.set)

    # -- fan-out ---------------------------------------------------------------------------
    async def _fanout_loop(self) -> None:
        last = 0.0
        while not self._stopping:
            try:
                await asyncio.wait_for(self._fanout_wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
            # Under a stream of commits, one fan-out per commit would cost a write transaction
            # (and the database lock) each: at most one every _FANOUT_INTERVAL, for all of them.
            pause = last + _FANOUT_INTERVAL - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            last = time.monotonic()
            # Woken by a commit that emitted notifications, there is work: the first batch is
            # fanned out on the loop when the writer is free; a poll, or a backlog beyond
            # that batch, goes to a worker thread (which looks before it takes the lock).
            here = self._fanout_wake.is_set()
            self._fanout_wake.clear()
            try:
                more = True
                while more:
                    done = fan_out_here(self.database, self.settings.base_url) if here else None
                    here = False
                    if done is None:
                        done = await asyncio.to_thread(fan_out_once, self.database, self.settings.base_url)
                    produced, more = done
                    for subscription_id, items in produced.items():
                        self._queues.setdefault(subscription_id, deque()).extend(items)
                        self._ready.add(subscription_id)
                        signal = self._signals.get(subscription_id)
                        if signal is not None:
                            signal.set()
                    if produced:
                        self._schedule_wake.set()
            except Exception:  # a database hiccup must not kill the loop; it retries next tick
                log.exception("notification fan-out failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    # -- scheduling ------------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        last_scan = 0.0
        last_housekeeping = time.monotonic()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._schedule_wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
            self._schedule_wake.clear()
            try:
                now = time.monotonic()
                if now - last_scan >= self.settings.poll_interval:
                    last_scan = now
                    self._ready.update(await asyncio.to_thread(self._due_subscriptions))
                if now - last_housekeeping >= _HOUSEKEEPING_INTERVAL:
                    last_housekeeping = now
                    await asyncio.to_thread(self._housekeeping)
                candidates = [sid for sid in self._ready if sid not in self._active]
                room = self.settings.concurrency - len(self._active)
                if room <= 0 or not candidates:
                    continue
                chosen = candidates[:room]
                self._ready.difference_update(chosen)
                targets = await asyncio.to_thread(self._claim, sorted(chosen))
                for target in targets:
                    task = asyncio.create_task(self._serve(target))
                    self._active[target.subscription_id] = task
                    task.add_done_callback(lambda _t, sid=target.subscription_id: self._finished(sid))
                # Held by another replica (or worker), or backing off: what fan-out handed us is
                # read back from the database when the lease comes here.
                for sid in set(chosen) - {target.subscription_id for target in targets}:
                    if sid not in self._active:
                        self._queues.pop(sid, None)
            except Exception:
                log.exception("notification delivery scheduling failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    def _finished(self, subscription_id: str) -> None:
        self._active.pop(subscription_id, None)
        if self._queues.get(subscription_id):
            self._ready.add(subscription_id)
        self._schedule_wake.set()

    def _due_subscriptions(self) -> set[str]:
        now = utcnow()
        with self.database.read() as session:
            return set(
                session.scalars(
                    select(SubscriptionRow.id).where(
                        _HAS_PENDING,
                        or_(SubscriptionRow.next_attempt_at.is_(None), SubscriptionRow.next_attempt_at <= now),
                        or_(
                            SubscriptionRow.lease_until.is_(None),
                            SubscriptionRow.lease_until < now,
                            SubscriptionRow.lease_owner == self.replica_id,
                        ),
                    )
                )
            )

    def _claim(self, subscription_ids: list[str]) -> list[_Target]:
        """Take leases; a subscription another replica holds, or one backing off, is skipped."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        targets: list[_Target] = []
        with self.database.write() as session:
            for subscription_id in subscription_ids:
                result = session.execute(
                    update(SubscriptionRow)
                    .where(
                        SubscriptionRow.id == subscription_id,
                        or_(SubscriptionRow.next_attempt_at.is_(None), SubscriptionRow.next_attempt_at <= now),
                        or_(
                            SubscriptionRow.lease_until.is_(None),
                            SubscriptionRow.lease_until < now,
                            SubscriptionRow.lease_owner == self.replica_id,
                        ),
                    )
                    .values(lease_owner=self.replica_id, lease_until=until)
                )
                if result.rowcount != 1:
                    continue
                row = session.execute(
                    select(SubscriptionRow.api, SubscriptionRow.callback_uri, SubscriptionRow.authentication,
                           SubscriptionRow.resource_group_id, SubscriptionRow.all_groups, SubscriptionRow.body,
                           SubscriptionRow.acked_sequence, SubscriptionRow.acked_position)
                    .where(SubscriptionRow.id == subscription_id)
                ).one()
                expected = row.acked_sequence + 1
                # No position: nothing was pending when this row was read.
                anchor = None if row.acked_position is None else (row.acked_sequence, row.acked_position)
                # Acknowledged-but-unrecorded deliveries of this replica are not sent again.
                mine = self._expected.get(subscription_id)
                if mine is not None and mine[0] > expected:
                    expected, anchor = mine
                authentication = self.box.open(row.authentication) if row.authentication else None
                audience = Audience(subscription_id, row.api, row.resource_group_id, row.all_groups, row.body,
                                    self.settings.base_url)
                targets.append(_Target(subscription_id, row.api, row.callback_uri, authentication, expected,
                                       audience, anchor))
        return targets

    # -- delivery --------------------------------------------------------------------------
    async def _serve(self, target: _Target) -> None:
        """Deliver in order while holding the lease; linger a little when caught up, because a
        task that stays costs nothing while a new claim costs several queries."""
        sid = target.subscription_id
        checked_database = False
        try:
            while not self._stopping:
                item = self._next_from_memory(target)
                if item is None:
                    queue = self._queues.get(sid)
                    gap = bool(queue) and queue[0].sequence > target.next_sequence
                    if gap or not checked_database:
                        checked_database = True
                        batch = await asyncio.to_thread(self._reload, target)
                        if batch:
                            self._queues[sid] = deque(batch + [p for p in (queue or ()) if p.sequence > batch[-1].sequence])
                            continue
                    signal = self._signals.setdefault(sid, asyncio.Event())
                    signal.clear()
                    try:
                        await asyncio.wait_for(signal.wait(), _LINGER_SECONDS)
                    except TimeoutError:
                        # Another replica may have fanned out for us: look once more, then let go.
                        if await asyncio.to_thread(self._reload, target):
                            checked_database = False
                            continue
                        self._acks.released.add(sid)
                        return
                    continue
                failure = await self._post(target, item)
                if failure is not None:
                    await self._failed(sid, item.sequence, failure)
                    return
                self._queues[sid].popleft()
                target.next_sequence = item.sequence + 1
                target.anchor = (item.sequence, item.position)
                self._expected[sid] = (target.next_sequence, target.anchor)
                acks = self._acks
                acks.sequences[sid] = (item.sequence, item.position)  # in order: always the highest
                acks.latencies.append((target.api, time.time_ns() - item.committed_ns))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery to subscription %s failed unexpectedly", sid)
            await self._failed(sid, None, "internal delivery error")

    async def _failed(self, subscription_id: str, sequence: int | None, reason: str) -> None:
        acks = self._take_acks()
        try:
            await asyncio.to_thread(self._record_failure, acks, subscription_id, sequence, reason)
        except Exception:
            self._return_acks(acks)
            log.warning("recording a delivery failure failed; the lease will expire", exc_info=True)

    def _next_from_memory(self, target: _Target) -> Pending | None:
        queue = self._queues.get(target.subscription_id)
        while queue and queue[0].sequence < target.next_sequence:
            queue.popleft()  # already sent (e.g. reloaded from the database meanwhile)
        if queue and queue[0].sequence == target.next_sequence:
            return queue[0]
        return None

    def _reload(self, target: _Target) -> list[Pending]:
        """What follows ``target.next_sequence - 1``, numbered again from the log."""
        if target.anchor is None:
            # Nothing was pending at the claim; fan-out has anchored the subscription since if
            # something came, and it is read here.
            with self.database.read() as session:
                row = session.execute(
                    select(SubscriptionRow.acked_sequence, SubscriptionRow.acked_position)
                    .where(SubscriptionRow.id == target.subscription_id)
                ).first()
            if row is None or row.acked_position is None or row.acked_sequence + 1 != target.next_sequence:
                return []
            target.anchor = (row.acked_sequence, row.acked_position)
        with self.database.read() as session:
            return replay(session.connection(), target.audience, target.anchor, target.next_sequence, _RELOAD_BATCH)

    async def _post(self, target: _Target, item: Pending) -> str | None:
        """Send one notification; None when acknowledged (2xx), else why it failed."""
        assert self._client is not None and self._token_client is not None
        headers = _HEADERS
        try:
            if target.authentication:
                headers = {**_HEADERS, **await auth_headers(self._token_client, self.tokens, target.authentication)}
            status = await self._client.post(target.callback_uri, item.body, headers)
        except TimeoutError:
            return "timed out"
        except httpx.HTTPStatusError as exc:
            return f"token endpoint: {exc}"[:500]
        except (CallbackError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return None
        if status == 401 and target.authentication and "paramsOauth2ClientCredentials" in target.authentication:
            self.tokens.forget(target.authentication["paramsOauth2ClientCredentials"])
        return f"callback answered {status}"

    # -- bookkeeping -----------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_FLUSH_INTERVAL)
            acks = self._take_acks()
            if not (acks.sequences or acks.released or self._renew_due()):
                continue  # nothing to record: no worker thread woken 50 times a second for nothing
            try:
                await asyncio.to_thread(self._flush, acks, False, frozenset(self._active))
            except Exception:
                # e.g. a deadlock victim on PostgreSQL: keep the acknowledgements for the next try,
                # or they would be re-sent as duplicates.
                self._return_acks(acks)
                log.warning("recording acknowledged notifications failed; retrying", exc_info=True)

    def _renew_due(self) -> bool:
        return time.monotonic() - self._last_renew >= self.settings.lease_seconds / 3

    def _take_acks(self) -> _Acks:
        """Called on the event loop, which is the only writer of ``self._acks``."""
        acks, self._acks = self._acks, _Acks()
        if acks.latencies:  # the metrics, once per batch rather than once per notification
            counts: dict[str, int] = {}
            for api, _elapsed in acks.latencies:
                counts[api] = counts.get(api, 0) + 1
            _observe_all(LATENCY, [max(0.0, elapsed_ns / 1e9) for _api, elapsed_ns in acks.latencies])
            for api, count in counts.items():
                DELIVERED.labels(api).inc(count)
            acks.latencies = []
        return acks

    def _return_acks(self, acks: _Acks) -> None:
        """Put back acknowledgements a failed transaction did not record (event loop only)."""
        for subscription_id, (sequence, position) in acks.sequences.items():
            self._acks.acknowledge(subscription_id, sequence, position)
        self._acks.released |= acks.released

    def _flush(self, acks: _Acks, final: bool, active: frozenset[str] = frozenset()) -> None:
        """Record acknowledgements, release finished leases and renew the others, in one go."""
        now = utcnow()
        renew = not final and self._renew_due()
        # A subscription whose task restarted since it asked to be released keeps its lease.
        released = [sid for sid in acks.released if sid not in active]
        if not (acks.sequences or released or renew or final):
            return
        with self.database.write() as session:
            connection = session.connection()
            if acks.sequences and self.alarms is not None:
                recovered = connection.execute(_FAILING, {"ids": sorted(acks.sequences)}).scalars().all()
                for subscription_id in recovered:
                    self.alarms.subscription_recovered(session, subscription_id)
            if acks.sequences:
                # One row per subscription however many it acknowledged; sorted, so that
                # concurrent writers lock subscription rows in one order (no deadlock).
                convert = _SUBSCRIPTIONS.c.last_success_at.type.dialect_impl(connection.dialect).bind_processor(
                    connection.dialect)
                stamp = convert(now) if convert else now
                execute_many(connection, _ACKNOWLEDGED, [
                    {"sid": sid, "b_seq": sequence, "b_pos": position, "now": stamp}
                    for sid, (sequence, position) in sorted(acks.sequences.items())
                ])
            if final:
                connection.execute(_RELEASE_ALL, {"owner": self.replica_id})
            elif released:
                connection.execute(_RELEASE, {"ids": sorted(released), "owner": self.replica_id})
            if renew:
                self._last_renew = time.monotonic()
                connection.execute(_RENEW, {"owner": self.replica_id,
                                            "until": now + timedelta(seconds=self.settings.lease_seconds)})

    def _record_failure(self, acks: _Acks, subscription_id: str, sequence: int | None, reason: str) -> None:
        self._flush(acks, False, frozenset())  # what was acknowledged is recorded before the lease goes
        now = utcnow()
        with self.database.write() as session:
            subscription = session.scalar(select(SubscriptionRow).where(SubscriptionRow.id == subscription_id))
            if subscription is None:
                return
            failures = subscription.consecutive_failures + 1
            delay = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** min(failures - 1, 30))
            delay *= random.uniform(0.5, 1.0)
            failing_since = subscription.failing_since or now
            if (now - failing_since).total_seconds() >= self.settings.give_up_after and subscription.state != "FAILING":
                log.warning("subscription %s is FAILING: %s", subscription_id, reason)
                subscription.state = "FAILING"
                if self.alarms is not None:
                    self.alarms.subscription_failing(session, subscription_id, subscription.resource_group_id, reason)
            subscription.consecutive_failures = failures
            subscription.last_error = reason[:1024]
            subscription.last_error_at = now
            subscription.failing_since = failing_since
            subscription.next_attempt_at = now + timedelta(seconds=delay)
            subscription.lease_owner = None
            subscription.lease_until = None
            api = subscription.api
        FAILED.labels(api).inc()

    def _housekeeping(self) -> None:
        prune(self.database, utcnow() - timedelta(seconds=self.settings.retention_seconds))
        with self.database.read() as session:
            failing = session.scalar(select(func.count()).select_from(SubscriptionRow).where(SubscriptionRow.state == "FAILING"))
        FAILING.set(int(failing or 0))
        live = set(self._active) | self._ready
        for sid in [sid for sid, queue in self._queues.items() if not queue and sid not in live]:
            self._queues.pop(sid, None)
            self._signals.pop(sid, None)

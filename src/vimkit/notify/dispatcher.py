"""Fan-out of the outbox and at-least-once, in-order delivery to subscribers.

Two cooperating loops run in the server's event loop:

* **fan-out** reads committed outbox rows in commit order, finds the matching subscriptions and
  writes one delivery per subscription, numbered with that subscription's ``sequence``. On
  PostgreSQL a transaction-level advisory lock makes one replica at a time do it, so sequences
  never collide.
* **delivery** takes a lease on a subscription that has due deliveries (a conditional UPDATE,
  atomic on every backend), posts its deliveries strictly in sequence order, marks them
  delivered, and on failure schedules a retry with exponential backoff and full jitter. Leases
  make replicas share subscriptions without ever sending the same attempt twice; different
  subscriptions are served concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, delete, exists, or_, select, text, update

from vimkit.notify.callbacks import TokenCache, auth_headers
from vimkit.notify.filters import matches
from vimkit.notify.secrets import SecretBox
from vimkit.store.db import Database
from vimkit.store.models import DeliveryRow, OutboxRow, SubscriptionRow
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

_FANOUT_LOCK_KEY = 0x76696D6B  # "vimk": the advisory lock serialising fan-out across replicas
_BATCH = 500
_DELIVERY_BATCH = 200
# Acknowledged deliveries are recorded in groups: a crash re-sends at most this many.
_MARK_EVERY = 50


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
        self._fanout_wake = asyncio.Event()
        self._delivery_wake = asyncio.Event()
        self._ready: set[str] = set()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._token_client: httpx.AsyncClient | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fanout_wake = asyncio.Event()
        self._delivery_wake = asyncio.Event()
        # Building an SSL context loads the CA bundle (tens of ms): build it once for all clients.
        self._tls = ssl.create_default_context()
        self._token_client = httpx.AsyncClient(
            timeout=self.settings.request_timeout, follow_redirects=False, verify=self._tls
        )
        self.database.after_notifications.append(self.wake)
        self._tasks = [
            asyncio.create_task(self._fanout_loop(), name="vimkit-fanout"),
            asyncio.create_task(self._delivery_loop(), name="vimkit-delivery"),
        ]
        self.wake()

    async def stop(self) -> None:
        self._stopping = True
        if self.wake in self.database.after_notifications:
            self.database.after_notifications.remove(self.wake)
        for task in [*self._tasks, *self._active.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._active.values(), return_exceptions=True)
        await asyncio.to_thread(self._release_all_leases)
        for client in [*self._clients.values(), self._token_client]:
            if client is not None:
                await client.aclose()
        self._clients.clear()

    def wake(self) -> None:
        """Thread-safe: a transaction that emitted notifications has committed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fanout_wake.set)

    # -- fan-out ---------------------------------------------------------------------------
    async def _fanout_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._fanout_wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
            self._fanout_wake.clear()
            try:
                while True:
                    produced, more = await asyncio.to_thread(self.fan_out_once)
                    if produced:
                        self._ready.update(produced)
                        self._delivery_wake.set()
                    if not more:
                        break
            except Exception:  # a database hiccup must not kill the loop; it retries next tick
                log.exception("notification fan-out failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    def fan_out_once(self) -> tuple[set[str], bool]:
        """Turn one batch of outbox rows into deliveries; returns the subscriptions that got some."""
        touched: set[str] = set()
        with self.database.write() as session:
            if self.database.dialect == "postgresql":
                if not session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _FANOUT_LOCK_KEY}).scalar():
                    return touched, False
            events = list(session.scalars(select(OutboxRow).order_by(OutboxRow.seq).limit(_BATCH)))
            if not events:
                return touched, False
            apis = {event.api for event in events}
            subscriptions = list(
                session.scalars(select(SubscriptionRow).where(SubscriptionRow.api.in_(apis)).order_by(SubscriptionRow.seq))
            )
            now = utcnow()
            now_ns = time.time_ns()
            stamp = now.isoformat().replace("+00:00", "Z")
            for event in events:
                for subscription in subscriptions:
                    if subscription.api != event.api:
                        continue
                    if not subscription.all_groups and event.audience is not None and subscription.resource_group_id not in event.audience:
                        continue
                    if not matches(subscription.body.get("filter") or {}, event.facets):
                        continue
                    sequence = subscription.next_sequence
                    subscription.next_sequence = sequence + 1
                    body = {
                        "id": event.id,
                        "notificationType": event.notification_type,
                        "subscriptionId": subscription.id,
                        "timeStamp": stamp,
                        "sequence": sequence,
                        **event.payload,
                        "_links": {
                            "subscription": {
                                "href": f"{self.settings.base_url}/{subscription.api}/v1/subscriptions/{subscription.id}"
                            }
                        },
                    }
                    session.add(
                        DeliveryRow(
                            subscription_id=subscription.id,
                            sequence=sequence,
                            notification_id=event.id,
                            body=orjson.dumps(body),
                            delivered=False,
                            attempts=0,
                            created_at=now,
                            committed_at_ns=now_ns,
                        )
                    )
                    touched.add(subscription.id)
            session.execute(delete(OutboxRow).where(OutboxRow.seq.in_([event.seq for event in events])))
        return touched, len(events) == _BATCH

    # -- delivery --------------------------------------------------------------------------
    async def _delivery_loop(self) -> None:
        last_scan = 0.0
        semaphore_limit = self.settings.concurrency
        while not self._stopping:
            try:
                await asyncio.wait_for(self._delivery_wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
            self._delivery_wake.clear()
            try:
                if time.monotonic() - last_scan >= self.settings.poll_interval:
                    last_scan = time.monotonic()
                    self._ready.update(await asyncio.to_thread(self._due_subscriptions))
                candidates = [sid for sid in self._ready if sid not in self._active]
                self._ready.difference_update(candidates)
                room = semaphore_limit - len(self._active)
                if room <= 0 or not candidates:
                    continue
                claimed = await asyncio.to_thread(self._claim, candidates[:room])
                self._ready.update(candidates[room:])
                for subscription_id in claimed:
                    task = asyncio.create_task(self._serve(subscription_id))
                    self._active[subscription_id] = task
                    task.add_done_callback(lambda _t, sid=subscription_id: self._finished(sid))
            except Exception:
                log.exception("notification delivery scheduling failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)

    def _finished(self, subscription_id: str) -> None:
        self._active.pop(subscription_id, None)
        self._delivery_wake.set()

    def _due_subscriptions(self) -> set[str]:
        now = utcnow()
        pending = exists().where(DeliveryRow.subscription_id == SubscriptionRow.id, DeliveryRow.delivered.is_(False))
        with self.database.read() as session:
            rows = session.scalars(
                select(SubscriptionRow.id).where(
                    pending,
                    or_(SubscriptionRow.next_attempt_at.is_(None), SubscriptionRow.next_attempt_at <= now),
                    or_(
                        SubscriptionRow.lease_until.is_(None),
                        SubscriptionRow.lease_until < now,
                        SubscriptionRow.lease_owner == self.replica_id,
                    ),
                )
            )
            return set(rows)

    def _claim(self, subscription_ids: list[str]) -> list[str]:
        """Take leases; a row another replica holds (or that is backing off) is skipped."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        claimed: list[str] = []
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
                if result.rowcount == 1:
                    claimed.append(subscription_id)
        return claimed

    async def _serve(self, subscription_id: str) -> None:
        try:
            while not self._stopping:
                batch = await asyncio.to_thread(self._load_batch, subscription_id)
                if batch is None:
                    return
                subscription, deliveries, authentication = batch
                if not deliveries:
                    await asyncio.to_thread(self._release, subscription_id)
                    return
                done: list[tuple[int, int]] = []
                failure: str | None = None
                for delivery in deliveries:
                    failure = await self._post(subscription, delivery, authentication)
                    if failure is not None:
                        break
                    done.append((delivery.seq, delivery.committed_at_ns))
                    if len(done) >= _MARK_EVERY:
                        await asyncio.to_thread(self._mark_delivered, subscription, done)
                        done = []
                if done:
                    await asyncio.to_thread(self._mark_delivered, subscription, done)
                if failure is not None:
                    await asyncio.to_thread(self._record_failure, subscription_id, deliveries[len(done)].seq, failure)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery to subscription %s failed unexpectedly", subscription_id)
            await asyncio.to_thread(self._record_failure, subscription_id, None, "internal delivery error")

    def _load_batch(self, subscription_id: str) -> tuple[SubscriptionRow, list[DeliveryRow], dict[str, Any] | None] | None:
        now = utcnow()
        with self.database.read() as session:
            subscription = session.scalar(select(SubscriptionRow).where(SubscriptionRow.id == subscription_id))
            if subscription is None or subscription.lease_owner != self.replica_id:
                return None
            deliveries = list(
                session.scalars(
                    select(DeliveryRow)
                    .where(DeliveryRow.subscription_id == subscription_id, DeliveryRow.delivered.is_(False))
                    .order_by(DeliveryRow.sequence)
                    .limit(_DELIVERY_BATCH)
                )
            )
        remaining = (subscription.lease_until - now).total_seconds() if subscription.lease_until else 0
        if remaining < self.settings.lease_seconds * 2 / 3:
            # Renewing costs a write; do it only once a third of the lease has passed.
            with self.database.write() as session:
                renewed = session.execute(
                    update(SubscriptionRow)
                    .where(SubscriptionRow.id == subscription_id, SubscriptionRow.lease_owner == self.replica_id)
                    .values(lease_until=now + timedelta(seconds=self.settings.lease_seconds))
                )
                if renewed.rowcount != 1:
                    return None
        authentication = self.box.open(subscription.authentication) if subscription.authentication else None
        return subscription, deliveries, authentication

    async def _post(self, subscription: SubscriptionRow, delivery: DeliveryRow, authentication: dict[str, Any] | None) -> str | None:
        """Send one notification; None when acknowledged (2xx), else the reason it failed."""
        assert self._token_client is not None
        try:
            headers = {"Content-Type": "application/json", "Version": "1.0.0"}
            headers.update(await auth_headers(self._token_client, self.tokens, authentication))
            response = await self._client_for(subscription.id).post(
                subscription.callback_uri, content=delivery.body, headers=headers
            )
        except httpx.TimeoutException:
            return "timed out"
        except httpx.HTTPStatusError as exc:
            return f"token endpoint: {exc}"
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        if response.status_code == 401 and authentication and "paramsOauth2ClientCredentials" in authentication:
            self.tokens.forget(authentication["paramsOauth2ClientCredentials"])
        return f"callback answered {response.status_code}"

    def _client_for(self, subscription_id: str) -> httpx.AsyncClient:
        """One keep-alive connection per subscription: deliveries to it are sequential anyway,
        and a small pool per subscriber avoids httpcore scanning every idle connection of one
        big shared pool on each request."""
        client = self._clients.get(subscription_id)
        if client is None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            client = httpx.AsyncClient(
                timeout=self.settings.request_timeout, limits=limits, follow_redirects=False, verify=self._tls
            )
            self._clients[subscription_id] = client
        return client

    def _mark_delivered(self, subscription: SubscriptionRow, done: list[tuple[int, int]]) -> None:
        now = utcnow()
        with self.database.write() as session:
            session.execute(
                update(DeliveryRow).where(DeliveryRow.seq.in_([seq for seq, _ in done])).values(delivered=True, delivered_at=now)
            )
            session.execute(
                update(SubscriptionRow)
                .where(SubscriptionRow.id == subscription.id)
                .values(last_success_at=now, consecutive_failures=0, failing_since=None, state="ACTIVE", next_attempt_at=None)
            )
        now_ns = time.time_ns()
        for _seq, committed in done:
            LATENCY.observe(max(0.0, (now_ns - committed) / 1e9))
        DELIVERED.labels(subscription.api).inc(len(done))

    def _record_failure(self, subscription_id: str, delivery_seq: int | None, reason: str) -> None:
        now = utcnow()
        with self.database.write() as session:
            subscription = session.scalar(select(SubscriptionRow).where(SubscriptionRow.id == subscription_id))
            if subscription is None:
                return
            if delivery_seq is not None:
                session.execute(update(DeliveryRow).where(DeliveryRow.seq == delivery_seq).values(attempts=DeliveryRow.attempts + 1))
            failures = subscription.consecutive_failures + 1
            delay = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** min(failures - 1, 30))
            delay *= random.uniform(0.5, 1.0)
            failing_since = subscription.failing_since or now
            state = subscription.state
            if (now - failing_since).total_seconds() >= self.settings.give_up_after:
                if state != "FAILING":
                    log.warning("subscription %s is FAILING: %s", subscription_id, reason)
                state = "FAILING"
            subscription.consecutive_failures = failures
            subscription.last_error = reason[:1024]
            subscription.last_error_at = now
            subscription.failing_since = failing_since
            subscription.state = state
            subscription.next_attempt_at = now + timedelta(seconds=delay)
            subscription.lease_owner = None
            subscription.lease_until = None
            api = subscription.api
        FAILED.labels(api).inc()

    def _release(self, subscription_id: str) -> None:
        with self.database.write() as session:
            session.execute(
                update(SubscriptionRow)
                .where(SubscriptionRow.id == subscription_id, SubscriptionRow.lease_owner == self.replica_id)
                .values(lease_owner=None, lease_until=None)
            )

    def _release_all_leases(self) -> None:
        try:
            with self.database.write() as session:
                session.execute(
                    update(SubscriptionRow)
                    .where(SubscriptionRow.lease_owner == self.replica_id)
                    .values(lease_owner=None, lease_until=None)
                )
        except Exception:  # shutting down: the leases expire on their own
            log.debug("could not release delivery leases at shutdown", exc_info=True)

    def purge_delivered(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self.settings.retention_seconds)
        with self.database.write() as session:
            result = session.execute(
                delete(DeliveryRow).where(and_(DeliveryRow.delivered.is_(True), DeliveryRow.delivered_at < cutoff))
            )
        return int(result.rowcount or 0)

    def failing_count(self) -> int:
        with self.database.read() as session:
            count = len(list(session.scalars(select(SubscriptionRow.id).where(SubscriptionRow.state == "FAILING"))))
        FAILING.set(count)
        return count

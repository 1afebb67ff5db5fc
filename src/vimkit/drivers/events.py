"""Event fan-out for backends: independent, bounded subscriptions with RESYNC on overflow."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from vimkit.drivers.model import EventKind
from vimkit.drivers.specs import DriverEvent

_CLOSED = object()


class Subscription:
    """One subscriber's view of an :class:`EventHub`: an async iterator over its own queue.

    A class rather than an async generator on purpose: cancelling a pending ``__anext__`` (as
    ``asyncio.wait_for(anext(events), timeout)`` does) must not end the subscription, and an
    async generator is finalised by the cancellation thrown into it.
    """

    def __init__(self, hub: "EventHub") -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._done = False

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> DriverEvent:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if not isinstance(item, DriverEvent):  # the end-of-stream marker
            self._done = True
            self._hub._forget(self)
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._done = True
        self._hub._forget(self)

    def _offer(self, event: DriverEvent, limit: int) -> None:
        queue = self._queue
        if queue.qsize() >= limit:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(DriverEvent(
                event_id=f"resync-{event.event_id}", kind=EventKind.RESYNC, object_type=event.object_type,
                object_id="*", timestamp=event.timestamp,
                details={"reason": f"more than {limit} events were not consumed"},
            ))
        else:
            queue.put_nowait(event)

    def _end(self) -> None:
        self._queue.put_nowait(_CLOSED)


class EventHub:
    """Fan-out of driver events to independent subscribers, for backends to reuse.

    Each :meth:`subscribe` gets a bounded queue; ``publish`` never blocks the backend. A full
    queue is cleared and replaced by a single RESYNC event (see the module docstring). Hubs hold
    subscriptions weakly, so an iterator the consumer drops stops costing anything. Publishing
    from another thread (a QMP reader thread) goes through :meth:`publish_threadsafe`.
    """

    def __init__(self, max_queue: int = 10_000) -> None:
        self._max_queue = max_queue
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        """A new subscription; it sees events published from now on."""
        subscription = Subscription(self)
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            if self._closed:
                subscription._end()
            else:
                self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def publish(self, event: DriverEvent) -> None:
        """Deliver to every subscriber (call from the event loop's thread)."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription._offer(event, self._max_queue)

    def publish_threadsafe(self, event: DriverEvent) -> None:
        if self._loop is None:
            return  # nobody subscribed yet: nobody to tell
        self._loop.call_soon_threadsafe(self.publish, event)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    def close(self) -> None:
        """End every subscription (their iterators finish after the queued events)."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription._end()

"""``Prefer: wait=N`` (RFC 7240 §4.3) for calls that start long-running work.

The handler starts the work, then awaits :func:`wait_until` with the resource's "finished"
predicate and the budget from :func:`requested_wait`. Completion is noticed either through
:class:`ChangeSignal` (a change made by this process) or by polling the store, which also covers
changes made by another replica.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request

_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d{1,6})\"?\s*$", re.IGNORECASE)


def requested_wait(request: Request, cap_seconds: float) -> float | None:
    """Seconds the client is prepared to wait, capped; None when it did not ask.

    RFC 7240 says a preference the server does not understand is ignored, so a malformed
    ``Prefer`` header is not an error.
    """
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token = preference.split(";", 1)[0]
            match = _WAIT.match(token)
            if match:
                return min(float(match.group(1)), cap_seconds)
    return None


class ChangeSignal:
    """Wakes waiters in this process when a resource changes, instead of waiting a poll period."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, resource_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(resource_id, set()).add(event)
        return event

    def unsubscribe(self, resource_id: str, event: asyncio.Event) -> None:
        waiters = self._events.get(resource_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                self._events.pop(resource_id, None)

    def notify(self, resource_id: str) -> None:
        for event in list(self._events.get(resource_id, ())):
            event.set()


async def wait_until(
    finished: Callable[[], Awaitable[bool]],
    timeout: float,
    signal: ChangeSignal | None = None,
    resource_id: str | None = None,
    max_poll: float = 0.25,
) -> bool:
    """Await ``finished()`` becoming true for at most ``timeout`` seconds; return whether it did."""
    deadline = time.monotonic() + timeout
    poll = 0.005
    event = signal.subscribe(resource_id) if signal is not None and resource_id else None
    try:
        while True:
            if await finished():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            pause = min(poll, remaining)
            if event is not None:
                try:
                    await asyncio.wait_for(event.wait(), pause)
                except TimeoutError:
                    pass
                event.clear()
            else:
                await asyncio.sleep(pause)
            poll = min(poll * 2, max_poll)
    finally:
        if event is not None and signal is not None and resource_id:
            signal.unsubscribe(resource_id, event)

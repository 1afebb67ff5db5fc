"""``Prefer: wait`` parsing and the waiter."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from vimkit.api.prefer import ChangeSignal, requested_wait, wait_until


def _request(*values: str) -> Request:
    headers = [(b"prefer", value.encode()) for value in values]
    return Request({"type": "http", "headers": headers, "method": "POST", "path": "/"})


def test_requested_wait() -> None:
    assert requested_wait(_request(), 60) is None
    assert requested_wait(_request("wait=10"), 60) == 10
    assert requested_wait(_request("respond-async, wait=5"), 60) == 5
    assert requested_wait(_request("wait=600"), 60) == 60
    assert requested_wait(_request("wait=soon"), 60) is None
    assert requested_wait(_request("handling=lenient", "wait=3"), 60) == 3


def test_wait_until_times_out_and_succeeds() -> None:
    async def scenario() -> tuple[bool, bool, float]:
        done = False

        async def finished() -> bool:
            return done

        assert not await wait_until(finished, 0.05)
        signal = ChangeSignal()

        async def finish_later() -> None:
            nonlocal done
            await asyncio.sleep(0.1)
            done = True
            signal.notify("r1")

        started = time.monotonic()
        task = asyncio.create_task(finish_later())
        ok = await wait_until(finished, 5, signal, "r1", max_poll=10)
        await task
        return ok, not signal._events, time.monotonic() - started

    ok, cleaned, elapsed = asyncio.run(scenario())
    assert ok and cleaned and elapsed < 1.0  # woken by the signal, not by a 10 s poll

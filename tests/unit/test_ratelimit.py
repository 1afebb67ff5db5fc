"""The per-consumer token bucket, with a fake clock."""

from __future__ import annotations

import threading

import pytest

from vimkit.api.problems import Cause
from vimkit.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_configured_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    decisions = [limiter.check("a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after == 1 and refused.limit == 3
    clock.now += 0.5  # one token back at 2/s
    assert limiter.check("a").allowed
    assert not limiter.check("a").allowed
    clock.now += 10  # never more than the burst
    assert [limiter.check("a").allowed for _ in range(4)] == [True, True, True, False]


def test_buckets_are_per_consumer() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.check("a").allowed
    assert not limiter.check("a").allowed
    assert limiter.check("b").allowed


def test_headers_of_allowed_and_refused_decisions() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.5, burst=2, clock=clock)
    first = limiter.check("a").headers()
    assert first == {"RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "2"}
    limiter.check("a")
    refused = limiter.check("a")
    headers = refused.headers()
    assert headers["Retry-After"] == "2" and headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == "4"
    error = refused.error()
    assert error.status == 429 and error.cause is Cause.RATE_LIMITED and error.retryable
    assert error.headers["Retry-After"] == "2"


def test_zero_rate_disables() -> None:
    assert not RateLimiter(0, 10).enabled
    assert not RateLimiter.disabled().enabled
    assert RateLimiter(0.1, 1).enabled


def test_idle_buckets_are_pruned_when_the_table_is_full() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=10, clock=clock, max_buckets=4)
    for name in "abcd":
        limiter.check(name)
    clock.now += 5  # all full again: forgettable
    limiter.check("e")
    assert len(limiter._buckets) == 1


@pytest.mark.parametrize("threads", [8])
def test_concurrent_checks_never_grant_more_than_the_burst(threads: int) -> None:
    limiter = RateLimiter(rate=0.001, burst=100, clock=Clock())
    granted = []

    def worker() -> None:
        granted.extend(limiter.check("a").allowed for _ in range(50))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert sum(granted) == 100

"""Per-consumer rate limiting: an in-memory token bucket per consumer id.

Each consumer's bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second;
every authenticated request takes one. An empty bucket answers ``429`` (cause ``RATE_LIMITED``)
with ``Retry-After`` and the ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset``
headers of the IETF draft (draft-ietf-httpapi-ratelimit-headers); successful responses carry the
same ``RateLimit-*`` headers. ``rate = 0`` disables the limiter (the default).

The check runs in the shared authentication path (:func:`vimkit.api.auth.authenticate`), after
the token is verified, so unauthenticated requests never consume a consumer's budget. Buckets
live in the process: with several replicas each enforces the limit on its own share of traffic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimkit.api.problems import ApiError, Cause

STATE_KEY = "ratelimit"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until the next request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]

    def error(self) -> ApiError:
        return ApiError(
            429,
            f"rate limit exceeded ({self.limit} requests burst); retry in {self.retry_after} s",
            cause=Cause.RATE_LIMITED,
            headers=self.headers(),
        )


class RateLimiter:
    """Token buckets keyed by consumer id. Thread-safe; O(1) per check."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.enabled = self.rate > 0
        self._clock = clock
        self._max_buckets = max_buckets
        # consumer id -> [tokens, last refill time]
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> RateLimiter:
        return cls(0.0, 1)

    def check(self, key: str) -> Decision:
        """Take one token from ``key``'s bucket; the decision says whether it was there."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_buckets:
                    self._prune(now)
                bucket = [float(self.burst), now]
                self._buckets[key] = bucket
            tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            bucket[0] = tokens
            bucket[1] = now
        reset = math.ceil((self.burst - tokens) / self.rate) if tokens < self.burst else 0
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed, self.burst, int(tokens), reset, retry_after)

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (idle consumers); they restart full anyway."""
        full_after = self.burst / self.rate
        idle = [key for key, (_, last) in self._buckets.items() if now - last >= full_after]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self._max_buckets:  # all busy: drop the oldest half
            for key in list(self._buckets)[: self._max_buckets // 2]:
                del self._buckets[key]


class RateLimitHeadersMiddleware:
    """Adds the ``RateLimit-*`` headers of the request's decision to a successful response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = state.get(STATE_KEY)
                if decision is not None and decision.allowed:
                    message = {**message, "headers": [*message.get("headers", []), *decision.raw_headers()]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

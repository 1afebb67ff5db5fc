"""The asynchronous client: the same API as :mod:`vimkit.client.sync`, every call awaitable."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx

from vimkit.client import _core
from vimkit.client._core import Call, TokenState
from vimkit.client.errors import NotFound, TransportError, WaitTimeout
from vimkit.client.resources import ResourcesMixin
from vimkit.client.sync import _retriable_transport

T = TypeVar("T")


class AsyncClient(ResourcesMixin):
    """A CCM's asynchronous connection to one VIM (use ``async with``).

    Methods are those of :class:`vimkit.client.Client`; each returns an awaitable, and ``list``
    an async iterator. Authenticate with ``client_id`` / ``client_secret`` (tokens are fetched and refreshed as
    needed) or a fixed ``token``. Every POST carries an ``Idempotency-Key``; 429 and 503 are
    retried honouring ``Retry-After``, at most ``max_retries`` times and ``max_retry_delay``
    seconds in all. Errors are :class:`~vimkit.client.errors.ApiError` subclasses.
    """

    def __init__(self, base_url: str, client_id: str | None = None, client_secret: str | None = None, *,
                 token: str | None = None, scope: str | None = None, timeout: float = 30.0,
                 max_retries: int = _core.DEFAULT_MAX_RETRIES, max_retry_delay: float = _core.DEFAULT_MAX_RETRY_DELAY,
                 verify: Any = True, http: httpx.AsyncClient | None = None, max_connections: int = 100,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                                verify=_core.tls_verify(self.base_url, verify),
                                                limits=httpx.Limits(max_connections=max_connections,
                                                                    max_keepalive_connections=max_connections))
        self._credentials = (client_id, client_secret) if client_id and client_secret else None
        self._scope = scope
        self._tokens = TokenState(token, float("inf")) if token else TokenState()
        self._token_lock = asyncio.Lock()
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._sleep = sleep
        self._bind()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ tokens

    async def token(self) -> str | None:
        """A valid access token, fetched from ``/oauth2/token`` when there is none or it is about to expire."""
        value = self._tokens.fresh()
        if value or self._credentials is None:
            return value or self._tokens.value
        async with self._token_lock:  # one fetch for all tasks that found the token stale
            value = self._tokens.fresh()
            if value:
                return value
            request = _core.token_request(self._http, *self._credentials, self._scope)
            return self._tokens.store(await self._send_raw(request, retry_post=True))

    # ------------------------------------------------------------------ sending

    async def _send_raw(self, request: httpx.Request, retry_post: bool) -> httpx.Response:
        """Send with retries on transport errors and 429/503."""
        attempt, slept = 0, 0.0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries or not _retriable_transport(request.method, exc, retry_post):
                    raise TransportError(f"{request.method} {request.url}: {type(exc).__name__}: {exc}") from exc
                delay = _core.backoff(attempt)
            else:
                if response.status_code not in _core.RETRY_STATUSES or attempt >= self.max_retries:
                    return response
                delay = _core.retry_after(response, _core.backoff(attempt))
                if slept + delay > self.max_retry_delay:
                    return response
                await response.aclose()
            attempt += 1
            slept += delay
            await self._sleep(delay)

    async def _send(self, call: Call, url: str | None = None) -> httpx.Response:
        attempt, slept, refreshed = 0, 0.0, False
        while True:
            token = await self.token()
            request = _core.build_request(self._http, call, token, url)
            response = await self._send_raw(request, retry_post=call.key() is not None)
            if response.status_code == 401 and self._credentials and not refreshed:
                # The token was revoked or the signing key rotated: one fresh token, one retry.
                self._tokens.forget(token)
                refreshed = True
                continue
            if response.status_code == 409 and _core.should_retry(response, call) and attempt < self.max_retries:
                delay = _core.retry_after(response, 1.0)
                if slept + delay <= self.max_retry_delay:
                    attempt += 1
                    slept += delay
                    await self._sleep(delay)
                    continue
            return response

    async def _execute(self, call: Call) -> Any:
        return _core.parse(await self._send(call), call.model)

    async def _paginate(self, call: Call) -> AsyncIterator[Any]:
        response = await self._send(call)
        while True:
            for item in _core.parse(response, list[call.model] if call.model else None) or []:
                yield item
            url = _core.next_link(response)
            if url is None:
                return
            response = await self._send(Call("GET", call.path, model=call.model, headers=call.headers), url)

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                model: Any = None, wait: float | None = None) -> Any:
        """Any call of the API, with the client's authentication, retries and error handling."""
        return await self._execute(Call(method.upper(), path, params, body, model, wait))

    # ------------------------------------------------------------------ polling

    async def wait_until(self, fetch: Callable[[], Awaitable[T] | T], condition: Callable[[T | None], bool], *,
                         timeout: float = 60.0, interval: float = 0.2) -> T:
        """Call ``fetch`` until ``condition(value)`` is true (``value`` is None once ``fetch`` raises
        NotFound) and return the value; :class:`WaitTimeout` after ``timeout`` seconds. Exceptions
        of ``condition`` (a FAILED resource, say) propagate."""
        deadline = time.monotonic() + timeout
        delay = min(interval, 0.05)
        while True:
            try:
                value: Any = fetch()
                if inspect.isawaitable(value):
                    value = await value
            except NotFound:
                value = None
            if condition(value):
                return value  # type: ignore[return-value]
            if time.monotonic() + delay > deadline:
                raise WaitTimeout(f"condition not reached within {timeout:g} s", value)
            await self._sleep(delay)
            delay = min(interval, delay * 2)


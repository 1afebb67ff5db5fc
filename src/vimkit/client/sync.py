"""The synchronous client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from vimkit.client import _core
from vimkit.client._core import Call, TokenState
from vimkit.client.errors import NotFound, TransportError, WaitTimeout
from vimkit.client.resources import ResourcesMixin

T = TypeVar("T")


class Client(ResourcesMixin):
    """A CCM's connection to one VIM.

    Authenticate with ``client_id`` / ``client_secret`` (tokens are fetched and refreshed as
    needed) or a fixed ``token``. Every POST carries an ``Idempotency-Key``; 429 and 503 are
    retried honouring ``Retry-After``, at most ``max_retries`` times and ``max_retry_delay``
    seconds in all. Errors are :class:`~vimkit.client.errors.ApiError` subclasses.
    """

    def __init__(self, base_url: str, client_id: str | None = None, client_secret: str | None = None, *,
                 token: str | None = None, scope: str | None = None, timeout: float = 30.0,
                 max_retries: int = _core.DEFAULT_MAX_RETRIES, max_retry_delay: float = _core.DEFAULT_MAX_RETRY_DELAY,
                 verify: Any = True, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout,
                                           verify=_core.tls_verify(self.base_url, verify))
        self._credentials = (client_id, client_secret) if client_id and client_secret else None
        self._scope = scope
        self._tokens = TokenState(token, float("inf")) if token else TokenState()
        self._token_lock = threading.Lock()
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._sleep = sleep
        self._bind()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ tokens

    def token(self) -> str | None:
        """A valid access token, fetched from ``/oauth2/token`` when there is none or it is about to expire."""
        value = self._tokens.fresh()
        if value or self._credentials is None:
            return value or self._tokens.value
        with self._token_lock:  # one fetch for all threads that found the token stale
            value = self._tokens.fresh()
            if value:
                return value
            request = _core.token_request(self._http, *self._credentials, self._scope)
            return self._tokens.store(self._send_raw(request, retry_post=True))

    # ------------------------------------------------------------------ sending

    def _send_raw(self, request: httpx.Request, retry_post: bool) -> httpx.Response:
        """Send with retries on transport errors and 429/503."""
        attempt, slept = 0, 0.0
        while True:
            try:
                response = self._http.send(request)
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
                response.close()
            attempt += 1
            slept += delay
            self._sleep(delay)

    def _send(self, call: Call, url: str | None = None) -> httpx.Response:
        attempt, slept, refreshed = 0, 0.0, False
        while True:
            token = self.token()
            request = _core.build_request(self._http, call, token, url)
            response = self._send_raw(request, retry_post=call.key() is not None)
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
                    self._sleep(delay)
                    continue
            return response

    def _execute(self, call: Call) -> Any:
        return _core.parse(self._send(call), call.model)

    def _paginate(self, call: Call) -> Iterator[Any]:
        response = self._send(call)
        while True:
            yield from _core.parse(response, list[call.model] if call.model else None) or []
            url = _core.next_link(response)
            if url is None:
                return
            response = self._send(Call("GET", call.path, model=call.model, headers=call.headers), url)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                model: Any = None, wait: float | None = None) -> Any:
        """Any call of the API, with the client's authentication, retries and error handling."""
        return self._execute(Call(method.upper(), path, params, body, model, wait))

    # ------------------------------------------------------------------ polling

    def wait_until(self, fetch: Callable[[], T], condition: Callable[[T | None], bool], *, timeout: float = 60.0,
                   interval: float = 0.2) -> T:
        """Call ``fetch`` until ``condition(value)`` is true (``value`` is None once ``fetch`` raises
        NotFound) and return the value; :class:`WaitTimeout` after ``timeout`` seconds. Exceptions
        of ``condition`` (a FAILED resource, say) propagate."""
        deadline = time.monotonic() + timeout
        delay = min(interval, 0.05)
        while True:
            try:
                value: T | None = fetch()
            except NotFound:
                value = None
            if condition(value):
                return value  # type: ignore[return-value]
            if time.monotonic() + delay > deadline:
                raise WaitTimeout(f"condition not reached within {timeout:g} s", value)
            self._sleep(delay)
            delay = min(interval, delay * 2)


def _retriable_transport(method: str, exc: httpx.TransportError, retry_post: bool) -> bool:
    """Connection failures are always safe to retry; a lost answer only when the request is idempotent."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return method in ("GET", "HEAD", "DELETE") or (method == "POST" and retry_post)

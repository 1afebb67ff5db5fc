"""What the sync and async clients share: a call's description, how it becomes an HTTP request,
how an answer becomes a value or an exception, and when to retry.

The two clients differ only in how they wait (``time.sleep`` or ``asyncio.sleep``) and send,
so all decisions live here and both loops stay a few lines long.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from vimkit.client.errors import Problem, error_for

# Retries are bounded both in number and in the total time spent sleeping, so a VIM that keeps
# answering 503 makes a caller fail in a predictable time instead of hanging.
DEFAULT_MAX_RETRIES = 5
DEFAULT_MAX_RETRY_DELAY = 30.0
# A token is refreshed this long before it expires, so a request never leaves with a token that
# dies in flight.
TOKEN_MARGIN_SECONDS = 30.0
RETRY_STATUSES = (429, 503)


@dataclass
class Call:
    """One API operation: method, path, query, body and how to read the answer."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    model: Any = None
    wait: float | None = None
    if_match: str | None = None
    idempotency_key: str | None = None
    merge_patch: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def key(self) -> str | None:
        """The Idempotency-Key of a POST: fixed once, so every retry of this call sends the same."""
        if self.method != "POST":
            return None
        if self.idempotency_key is None:
            self.idempotency_key = str(uuid.uuid4())
        return self.idempotency_key


def tls_verify(base_url: str, verify: Any) -> Any:
    """``verify`` for an https base URL; False for plain http, where no TLS is ever spoken (the
    client follows no redirects): httpx otherwise builds an SSL context with the system's CA
    bundle at construction, which was a tenth of a short CLI command's CPU."""
    return verify if base_url.lower().startswith("https:") else False


def dump_body(body: Any) -> Any:
    if body is None:
        return None
    if isinstance(body, BaseModel):
        # Defaults are left out so the server applies its own and the body stays what the caller said.
        return body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return body


def clean_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {name: value for name, value in (params or {}).items() if value is not None and value is not False}


def build_request(client: httpx.Client | httpx.AsyncClient, call: Call, token: str | None,
                  url: str | None = None) -> httpx.Request:
    headers = {"Accept": "application/json, application/problem+json", **call.headers}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    key = call.key()
    if key:
        headers["Idempotency-Key"] = key
    if call.wait is not None:
        headers["Prefer"] = f"wait={max(0, int(call.wait))}"
    if call.if_match:
        headers["If-Match"] = call.if_match
    content = None
    body = dump_body(call.body)
    if body is not None or call.method in ("POST", "PATCH"):
        content = json.dumps(body if body is not None else {}).encode()
        headers["Content-Type"] = "application/merge-patch+json" if call.merge_patch else "application/json"
    timeout = None
    if call.wait is not None:
        # The server holds the answer up to `wait` seconds; the read timeout must outlast it.
        timeout = httpx.Timeout(client.timeout.connect, read=call.wait + (client.timeout.read or 30.0),
                                write=client.timeout.write, pool=client.timeout.pool)
    if url is not None:
        return client.build_request(call.method, url, headers=headers, content=content,
                                    **({"timeout": timeout} if timeout else {}))
    return client.build_request(call.method, call.path, params=clean_params(call.params), headers=headers,
                                content=content, **({"timeout": timeout} if timeout else {}))


def retry_after(response: httpx.Response, default: float) -> float:
    """``Retry-After`` in seconds (delta or HTTP date), else ``default``."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def should_retry(response: httpx.Response, call: Call) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    # 409 with Retry-After is the idempotency store saying the first request with this key is
    # still running: waiting and asking again yields its answer.
    return response.status_code == 409 and call.key() is not None and "Retry-After" in response.headers


def backoff(attempt: int) -> float:
    return min(8.0, 0.2 * 2 ** attempt)


def problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return Problem(response.status_code, response.text).as_dict()
    if not isinstance(document, dict):
        return Problem(response.status_code, response.text).as_dict()
    return document


def raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_for(response.status_code, problem_of(response), response.request.method, str(response.request.url))


def parse(response: httpx.Response, model: Any) -> Any:
    """The answer's value: ``None`` without a body (204), else the JSON validated by ``model``."""
    raise_for(response)
    if response.status_code == 204 or not response.content:
        return None
    document = response.json()
    if model is None:
        return document
    return adapter(model).validate_python(document)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(model: Any) -> TypeAdapter[Any]:
    found = _ADAPTERS.get(model)
    if found is None:
        found = _ADAPTERS[model] = TypeAdapter(model)
    return found


def next_link(response: httpx.Response) -> str | None:
    link = response.links.get("next")
    return link.get("url") if link else None


@dataclass
class TokenState:
    """The current access token and when to stop using it."""

    value: str | None = None
    expires_at: float = 0.0

    def fresh(self) -> str | None:
        if self.value and time.monotonic() < self.expires_at - TOKEN_MARGIN_SECONDS:
            return self.value
        return None

    def store(self, response: httpx.Response) -> str:
        raise_for(response)
        document = response.json()
        self.value = str(document["access_token"])
        self.expires_at = time.monotonic() + float(document.get("expires_in", 300))
        return self.value

    def forget(self, token: str | None) -> None:
        if token is not None and self.value == token:
            self.value = None


def token_request(client: httpx.Client | httpx.AsyncClient, client_id: str, secret: str,
                  scope: str | None) -> httpx.Request:
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.build_request("POST", "/oauth2/token", data=data, headers={"Authorization": f"Basic {credentials}"})

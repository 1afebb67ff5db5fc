"""Pure ASGI middleware for the conventions that apply before routing (rest-binding.md §1.2).

- ``Version`` request header: malformed → 400, unsupported → 406; every response carries it.
- Request bodies above the configured limit → 413, checked on the declared length and while
  streaming, so an oversize body is never buffered whole.
- A request id (``X-Request-Id``, generated unless given) on the response and in the logs.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from contextvars import ContextVar

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimkit import API_VERSION
from vimkit.api.problems import ApiError, Cause, problem_body
from vimkit.api.json import dumps
from vimkit.store.group_commit import Demand

log = logging.getLogger("vimkit.access")
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_VERSION_RE = re.compile(r"^(\d{1,4})\.(\d{1,4})\.(\d{1,4})$")
_SUPPORTED = tuple(int(part) for part in API_VERSION.split("."))
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Generated ids: a random prefix per process and a counter, unique across processes and restarts
# without reading the system's random source on every request.
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so the framework's body parser lets it through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


def _version_error(value: str) -> ApiError | None:
    match = _VERSION_RE.match(value.strip())
    if match is None:
        return ApiError(
            400,
            f"Version header '{value}' is not of the form MAJOR.MINOR.PATCH",
            invalid_params=[("Version", "must be MAJOR.MINOR.PATCH")],
        )
    requested = tuple(int(part) for part in match.groups())
    if requested[0] != _SUPPORTED[0] or requested > _SUPPORTED:
        return ApiError(
            406,
            f"API version {value} is not supported; this server offers {API_VERSION}",
            cause=Cause.NOT_ACCEPTABLE,
        )
    return None


class ConventionsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, demand: Demand | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.demand = demand  # counts the write requests being served (vimkit.store.group_commit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        given_id = headers.get("x-request-id", "")
        request_id = given_id if given_id and _REQUEST_ID_RE.match(given_id) else f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = [0]
        extra_headers = [
            (b"version", API_VERSION.encode()),
            (b"x-request-id", request_id.encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
            await send(message)

        demand = self.demand if scope["method"] in _WRITE_METHODS else None
        if demand is not None:
            demand.requests += 1
        try:
            error = self._precheck(headers)
            if error is not None:
                await self._send_problem(send_with_headers, error, scope["path"])
                return
            try:
                await self.app(scope, self._limited(receive), send_with_headers)
            except _BodyTooLarge:
                if status_holder[0] == 0:
                    await self._send_problem(send_with_headers, self._too_large(), scope["path"])
        finally:
            if demand is not None:
                demand.requests -= 1
            elapsed_ms = (time.perf_counter() - started) * 1000
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    scope["path"],
                    status_holder[0],
                    elapsed_ms,
                    extra={"request_id": request_id, "status": status_holder[0]},
                )
            request_id_var.reset(token)

    def _precheck(self, headers: dict[str, str]) -> ApiError | None:
        version = headers.get("version")
        if version is not None:
            error = _version_error(version)
            if error is not None:
                return error
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return ApiError(400, "Content-Length is not a number")
            if int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body exceeds {self.max_body_bytes} bytes",
            cause=Cause.PAYLOAD_TOO_LARGE,
        )

    def _limited(self, receive: Receive) -> Receive:
        seen = [0]

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        return limited_receive

    @staticmethod
    async def _send_problem(send: Send, error: ApiError, path: str) -> None:
        body = dumps(problem_body(error, path))
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            *[(k.lower().encode(), v.encode()) for k, v in error.headers.items()],
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

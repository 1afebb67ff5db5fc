"""ASGI middleware that records every mutating call (POST, PUT, PATCH, DELETE) in the audit log.

It is the outermost middleware, so it also sees calls refused before routing (400 Version, 413)
and by authentication (401, 403, 429), and the token endpoint (whose caller is known only when it
succeeds). The entry is queued after the response has been sent; the database write happens in
the audit log's own thread (see :mod:`vimkit.domain.audit`). Read methods pass straight through.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimkit.api.auth import CALLER_STATE_KEY
from vimkit.api.middleware import request_id_var
from vimkit.domain.audit import AuditEntry, AuditLog
from vimkit.store.repository import utcnow

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING or not self.audit.enabled:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        occurred_at = utcnow()
        started = time.perf_counter()
        status = 0
        request_id: str | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            if status == 0:
                status = 500
            raise
        finally:
            caller = state.get(CALLER_STATE_KEY)
            client = scope.get("client")
            self.audit.record(
                AuditEntry(
                    occurred_at=occurred_at,
                    consumer_id=caller.consumer_id if caller is not None else None,
                    resource_group_id=caller.resource_group_id if caller is not None else None,
                    client_ip=client[0] if client else None,
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    request_id=request_id or _current_request_id(),
                    duration_us=int((time.perf_counter() - started) * 1e6),
                )
            )


def _current_request_id() -> str | None:
    value = request_id_var.get()
    return None if value == "-" else value

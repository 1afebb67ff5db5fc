"""A small notification receiver: the callback end of a subscription (rest-binding.md §6).

:class:`NotificationReceiver` is a plain ASGI app: it answers the VIM's test ``GET`` with 204,
acknowledges each ``POST``ed notification with 204 and keeps it (``notifications``, or
``on_notification``), dropping repeats by notification ``id`` because delivery is at least once.
With ``basic=(user, password)`` it refuses requests without those credentials (401), which is what
a subscription's ``authentication: {authType: [BASIC], paramsBasic: …}`` makes the VIM send.

``serve_in_thread()`` runs it with uvicorn on 127.0.0.1 (a free port unless one is given).
"""

from __future__ import annotations

import base64
import hmac
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]


class NotificationReceiver:
    def __init__(self, basic: tuple[str, str] | None = None,
                 on_notification: Callable[[dict[str, Any]], None] | None = None, keep: int = 100_000) -> None:
        self.basic = basic
        self.on_notification = on_notification
        self.notifications: list[dict[str, Any]] = []
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.tests = 0
        self.refused = 0
        self._seen: set[str] = set()
        self._keep = keep
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = self.handle(scope["method"], dict(scope.get("headers") or []), body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"www-authenticate", b'Basic realm="vimkit"')] if status == 401 else []})
        await send({"type": "http.response.body", "body": b""})

    def handle(self, method: str, headers: dict[bytes, bytes], body: bytes) -> int:
        if not self._authorised(headers.get(b"authorization", b"").decode("latin-1")):
            self.refused += 1
            return 401
        if method in ("GET", "HEAD"):
            self.tests += 1
            return 204
        if method != "POST":
            return 405
        try:
            notification = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(notification, dict):
            return 400
        self._accept(notification)
        return 204

    def _authorised(self, header: str) -> bool:
        if self.basic is None:
            return True
        expected = "Basic " + base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
        return hmac.compare_digest(header.encode(), expected.encode())

    def _accept(self, notification: dict[str, Any]) -> None:
        key = str(notification.get("id", ""))
        with self._lock:
            if key and key in self._seen:
                return
            if key:
                self._seen.add(key)
            self.notifications.append(notification)
            if len(self.notifications) > self._keep:
                del self.notifications[: len(self.notifications) - self._keep]
        self.queue.put(notification)
        if self.on_notification is not None:
            self.on_notification(notification)

    # ------------------------------------------------------------------ helpers

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first notification kept so far or arriving within ``timeout`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for notification in self.notifications:
                    if predicate(notification):
                        return notification
            if time.monotonic() > deadline:
                raise TimeoutError("no matching notification arrived")
            time.sleep(0.02)

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0, path: str = "/notifications") -> str:
        """Start uvicorn in a daemon thread; returns the callback URI."""
        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = sock.getsockname()[1]
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the notification receiver did not start")
            time.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}{path}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

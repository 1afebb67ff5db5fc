"""Real HTTP notification receivers on 127.0.0.1 for the tests (and the benchmark).

A :class:`Receiver` answers the subscription test ``GET`` with 204 and records every ``POST``ed
notification. Its behaviour is configurable: fail the first N posts, fail forever, answer slowly,
require HTTP Basic credentials or an OAuth 2.0 bearer token from its own ``/token`` endpoint.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    fail_first: int = 0
    fail_forever: bool = False
    delay: float = 0.0
    get_status: int = 204
    basic: tuple[str, str] | None = None
    oauth_client: tuple[str, str] | None = None
    token_lifetime: int = 3600


@dataclass
class Receiver:
    behaviour: Behaviour = field(default_factory=Behaviour)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    gets: int = 0
    posts: int = 0
    rejected_auth: int = 0
    token_requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _tokens: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/callback"

    @property
    def token_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", content_type)
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                behaviour = receiver.behaviour
                if behaviour.basic is not None:
                    expected = base64.b64encode(f"{behaviour.basic[0]}:{behaviour.basic[1]}".encode()).decode()
                    return header == f"Basic {expected}"
                if behaviour.oauth_client is not None:
                    return header.startswith("Bearer ") and header[7:] in receiver._tokens
                return True

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                with receiver._lock:
                    receiver.gets += 1
                if not self._authorised():
                    receiver.rejected_auth += 1
                    self._reply(401)
                    return
                self._reply(receiver.behaviour.get_status)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path == "/token":
                    self._token(raw)
                    return
                if not self._authorised():
                    receiver.rejected_auth += 1
                    self._reply(401)
                    return
                behaviour = receiver.behaviour
                with receiver._lock:
                    receiver.posts += 1
                    attempt = receiver.posts
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                if behaviour.fail_forever or attempt <= behaviour.fail_first:
                    self._reply(500, b'{"error": "try again"}')
                    return
                with receiver._lock:
                    receiver.notifications.append(json.loads(raw))
                self._reply(204)

            def _token(self, raw: bytes) -> None:
                receiver.token_requests += 1
                expected = receiver.behaviour.oauth_client
                header = self.headers.get("Authorization", "")
                good = expected is not None and header == "Basic " + base64.b64encode(
                    f"{expected[0]}:{expected[1]}".encode()
                ).decode()
                if not good or b"grant_type=client_credentials" not in raw:
                    self._reply(401, b'{"error": "invalid_client"}')
                    return
                token = secrets.token_hex(16)
                receiver._tokens.add(token)
                body = {"access_token": token, "token_type": "Bearer", "expires_in": receiver.behaviour.token_lifetime}
                self._reply(200, json.dumps(body).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.notifications) >= count:
                    return list(self.notifications)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notifications, got {len(self.notifications)}: {self.notifications[-3:]}")

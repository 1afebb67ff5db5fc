"""Shared fixtures: real vimkit servers on 127.0.0.1 over SQLite and PostgreSQL, and HTTP clients.

API tests take ``vim`` (a running server with its admin client) and run once per database
backend. PostgreSQL comes from ``VIMKIT_TEST_PG_URL`` (``scripts/test.sh`` starts a throwaway
cluster); without it the PostgreSQL variants are skipped, unless ``VIMKIT_TEST_REQUIRE_PG`` says
they must run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vimkit.app import build_services, create_app
from vimkit.config import Settings

ADMIN_ID = "test-admin"
ADMIN_SECRET = "test-admin-secret-0123456789"
PG_URL = os.environ.get("VIMKIT_TEST_PG_URL")
REQUIRE_PG = os.environ.get("VIMKIT_TEST_REQUIRE_PG") == "1"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vimkit.db'}"
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("VIMKIT_TEST_REQUIRE_PG is set but VIMKIT_TEST_PG_URL is not")
        pytest.skip("PostgreSQL not configured (set VIMKIT_TEST_PG_URL)")
    name = f"vk_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class RunningServer:
    """A vimkit server in a background thread, reachable over real HTTP on loopback."""

    settings: Settings
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    services: object
    tokens: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def token(self, client_id: str = ADMIN_ID, secret: str = ADMIN_SECRET, scope: str | None = None) -> str:
        key = (client_id, secret, scope or "")
        if key not in self.tokens:
            data = {"grant_type": "client_credentials"}
            if scope:
                data["scope"] = scope
            response = httpx.post(f"{self.base_url}/oauth2/token", data=data, auth=(client_id, secret))
            assert response.status_code == 200, response.text
            self.tokens[key] = response.json()["access_token"]
        return self.tokens[key]

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def new_consumer(self, name: str | None = None, scopes: list[str] | None = None,
                     resource_group_id: str | None = None) -> "Consumer":
        from vimkit.auth.scopes import CONSUMER_SCOPES

        body: dict[str, object] = {"consumerName": name or f"ccm-{uuid.uuid4().hex[:6]}",
                                   "scopes": scopes or list(CONSUMER_SCOPES)}
        if resource_group_id:
            body["resourceGroupId"] = resource_group_id
        with self.client() as admin:
            response = admin.post("/admin/v1/consumers", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        return Consumer(self, data["consumerId"], data["clientId"], data["clientSecret"], data["resourceGroupId"])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.services.close()  # type: ignore[attr-defined]


@dataclass
class Consumer:
    vim: RunningServer
    consumer_id: str
    client_id: str
    client_secret: str
    resource_group_id: str

    def token(self, scope: str | None = None) -> str:
        return self.vim.token(self.client_id, self.client_secret, scope)

    def client(self, scope: str | None = None) -> httpx.Client:
        return self.vim.client(self.token(scope))


def start_server(data_dir: Path, database_url: str, **overrides: object) -> RunningServer:
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        port=_free_port(),
        admin_client_id=ADMIN_ID,
        admin_client_secret=ADMIN_SECRET,
        log_level="warning",
        **overrides,
    )
    services = build_services(settings)
    app = create_app(settings, services)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("vimkit test server did not start")
        time.sleep(0.01)
    return RunningServer(settings, f"http://127.0.0.1:{settings.port}", server, thread, services)


@pytest.fixture
def vim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "data", database_url)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sqlite_vim(tmp_path: Path) -> Iterator[RunningServer]:
    """A server on SQLite only, for tests whose subject is not the database."""
    running = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}")
    try:
        yield running
    finally:
        running.stop()


def assert_problem(response: httpx.Response, status: int, name: str | None = None) -> dict:
    """The response is RFC 9457 problem details with ``status``; ``name`` is among invalidParams."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["detail"] and body["type"].startswith("urn:vimkit:problem:")
    assert isinstance(body["retryable"], bool) and body["cause"]
    if name is not None:
        names = [param["name"] for param in body.get("invalidParams", [])]
        assert name in names, body
    return body


# --- security helpers (tests/api/test_security.py, test_route_auth_walk.py, unit/test_tokens.py) ---


class JwksServer:
    """A JWKS document served over HTTP on 127.0.0.1 by a background thread, for external-IdP tests.

    ``add_key`` publishes a public key; ``requests`` counts fetches; ``stop`` shuts it down.
    """

    def __init__(self) -> None:
        import http.server
        import json as _json

        self.document: dict[str, list[dict[str, object]]] = {"keys": []}
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests += 1
                body = _json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add_key(self, private_key: object, kid: str, alg: str) -> None:
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        algorithm = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
        jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)  # type: ignore[attr-defined]
        self.document["keys"].append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.stop()


def admin_claims(vim: RunningServer) -> dict[str, object]:
    """Claims of a valid token of the bootstrap admin of ``vim`` (to forge variants of it)."""
    row = next(row for row in vim.services.consumers.list() if row.client_id == ADMIN_ID)  # type: ignore[attr-defined]
    now = int(time.time())
    return {"iss": vim.settings.token_issuer, "aud": "vimkit", "sub": row.id, "rg": row.resource_group_id,
            "scope": " ".join(sorted(row.scopes)), "gen": row.generation, "iat": now, "nbf": now,
            "exp": now + 600, "jti": uuid.uuid4().hex}


def forge_token(vim: RunningServer, *, key: object = None, kid: str | None = None, alg: str = "ES256",
                **claims: object) -> str:
    """A token like the admin's, signed with the server's current key unless ``key``/``kid`` say
    otherwise; ``claims`` override (a value of None removes the claim)."""
    import jwt

    from vimkit.auth.keys import KeyStore

    current = KeyStore(vim.settings.data_dir, 3660).current
    body = {**admin_claims(vim), **claims}
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key if key is not None else current.private_pem, algorithm=alg,
                      headers={"kid": kid if kid is not None else current.kid})


# --- storage helpers (tests/api/test_storage*.py) ---

STORAGE_INVENTORY = """\
[[nfviPops]]
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-a"
zoneName = "Zone A"
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-b"
zoneName = "Zone B"
nfviPopId = "pop-1"

[[hosts]]
hostId = "host-a1"
zoneId = "zone-a"
vcpus = 16
memoryMb = 65536
diskGb = 500

[[hosts]]
hostId = "host-b1"
zoneId = "zone-b"
vcpus = 16
memoryMb = 65536
diskGb = 500

[[storagePools]]
poolId = "pool-a1"
zoneId = "zone-a"
typeOfStorage = "volume"
capacityGb = 100
allocationRatio = 1.5

[[storagePools]]
poolId = "pool-a2"
zoneId = "zone-a"
typeOfStorage = "volume"
capacityGb = 100
multiAttach = true

[[storagePools]]
poolId = "pool-b"
zoneId = "zone-b"
typeOfStorage = "volume"
capacityGb = 100
rdmaEnabled = true

[[storagePools]]
poolId = "pool-ssd"
zoneId = "zone-b"
typeOfStorage = "ssd"
capacityGb = 50
"""


def storage_settings(directory: Path) -> dict[str, object]:
    """Server overrides for storage tests: four small pools (see STORAGE_INVENTORY), no latency."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "storage-inventory.toml"
    path.write_text(STORAGE_INVENTORY)
    return {"inventory_file": path, "sim_latency_scale": 0.0, "notify_backoff_base": 0.05,
            "notify_backoff_cap": 0.3, "notify_poll_interval": 0.1}


def child_processes(parent: int, word: str) -> list[int]:
    """The pids of ``parent``'s children whose command line contains ``word``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and word in command:
            found.append(int(entry))
    return found

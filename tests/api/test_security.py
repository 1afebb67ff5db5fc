"""Authentication and authorisation end to end (rest-binding.md §2): tokens, revocation, rate
limiting, the audit log, secret hygiene, the external identity provider, bootstrap and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import MetaData, create_engine, select

from tests.conftest import ADMIN_ID, ADMIN_SECRET, JwksServer, RunningServer, assert_problem, start_server
from vimkit.app import build_services
from vimkit.auth.keys import KeyStore
from vimkit.auth.scopes import ALL_SCOPES
from vimkit.config import Settings

TOKEN_PATH = "/oauth2/token"


def _token_response(vim: RunningServer, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{vim.base_url}{TOKEN_PATH}", **kwargs)  # type: ignore[arg-type]


# --- the token endpoint ------------------------------------------------------------------------


def test_token_claims_and_both_client_authentication_methods(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    consumer = vim.new_consumer(scopes=["compute:read", "network:read"])
    by_form = _token_response(vim, data={"grant_type": "client_credentials", "client_id": consumer.client_id,
                                         "client_secret": consumer.client_secret})
    by_basic = _token_response(vim, data={"grant_type": "client_credentials", "scope": "network:read"},
                               auth=(consumer.client_id, consumer.client_secret))
    assert by_form.status_code == 200 and by_basic.status_code == 200
    body = by_form.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == vim.settings.token_lifetime_seconds
    assert body["scope"] == "compute:read network:read" and by_basic.json()["scope"] == "network:read"
    assert by_form.headers["cache-control"] == "no-store" and by_form.headers["pragma"] == "no-cache"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256"
    assert header["kid"] in {key.kid for key in KeyStore(vim.settings.data_dir, 3660).keys}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == vim.settings.token_issuer and claims["aud"] == "vimkit"
    assert claims["sub"] == consumer.consumer_id and claims["rg"] == consumer.resource_group_id
    assert claims["scope"] == "compute:read network:read"
    assert claims["exp"] - claims["iat"] == vim.settings.token_lifetime_seconds
    with vim.client(by_basic.json()["access_token"]) as narrowed:
        assert_problem(narrowed.get("/compute/v1/flavours"), 403)
    # Tokens are never stored or replayed for an Idempotency-Key; unknown parameters are ignored.
    keyed = [_token_response(vim, data={"grant_type": "client_credentials", "extra": "x"}, params={"foo": "1"},
                             auth=(consumer.client_id, consumer.client_secret), headers={"Idempotency-Key": "k"})
             for _ in range(2)]
    assert [response.status_code for response in keyed] == [200, 200]
    assert keyed[0].json()["access_token"] != keyed[1].json()["access_token"]
    assert "idempotent-replayed" not in keyed[1].headers


def test_token_endpoint_errors_are_rfc6749(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    grant = {"grant_type": "client_credentials"}
    cases = [
        (dict(data=grant), 401, "invalid_client"),
        (dict(data=grant, auth=(ADMIN_ID, "wrong")), 401, "invalid_client"),
        (dict(data={**grant, "client_id": ADMIN_ID, "client_secret": "wrong"}), 401, "invalid_client"),
        (dict(data={**grant, "client_id": "nobody", "client_secret": "x"}), 401, "invalid_client"),
        (dict(data={}, auth=(ADMIN_ID, ADMIN_SECRET)), 400, "invalid_request"),
        (dict(data={"grant_type": "authorization_code"}, auth=(ADMIN_ID, ADMIN_SECRET)), 400, "unsupported_grant_type"),
        (dict(json=grant, auth=(ADMIN_ID, ADMIN_SECRET)), 400, "invalid_request"),
        (dict(data={**grant, "client_id": ADMIN_ID}, auth=(ADMIN_ID, ADMIN_SECRET)), 400, "invalid_request"),
        (dict(data={**grant, "scope": "no-such-scope"}, auth=(ADMIN_ID, ADMIN_SECRET)), 400, "invalid_scope"),
        (dict(data=grant, headers={"Authorization": "Basic !!!"}), 401, "invalid_client"),
    ]
    for kwargs, status, error in cases:
        response = _token_response(vim, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        body = response.json()
        assert body["error"] == error and body["error_description"], body
        assert body["status"] == status and body["cause"] and body["type"].startswith("urn:vimkit:problem:")
        assert response.headers["cache-control"] == "no-store"
        if status == 401:
            assert response.headers["www-authenticate"].split()[0] in ("Basic", "Bearer")


# --- revocation --------------------------------------------------------------------------------


def test_rotating_or_deleting_revokes_tokens_at_once(vim: RunningServer) -> None:
    consumer = vim.new_consumer(scopes=["compute:read"])
    old_token = consumer.token()
    with vim.client(old_token) as api:
        assert api.get("/compute/v1/flavours").status_code == 200
    with vim.client() as admin:
        rotated = admin.post(f"/admin/v1/consumers/{consumer.consumer_id}/rotate_secret")
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    new_secret = rotated.json()["clientSecret"]
    assert new_secret and new_secret != consumer.client_secret
    with vim.client(old_token) as api:
        response = api.get("/compute/v1/flavours")
    assert_problem(response, 401)
    assert "revoked" in response.json()["detail"] and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert _token_response(vim, data={"grant_type": "client_credentials"},
                           auth=(consumer.client_id, consumer.client_secret)).status_code == 401
    new_token = vim.token(consumer.client_id, new_secret)
    with vim.client(new_token) as api:
        assert api.get("/compute/v1/flavours").status_code == 200
    with vim.client() as admin:
        assert admin.delete(f"/admin/v1/consumers/{consumer.consumer_id}").status_code == 204
        assert_problem(admin.get(f"/admin/v1/consumers/{consumer.consumer_id}"), 404)
        assert_problem(admin.delete(f"/admin/v1/consumers/{consumer.consumer_id}"), 404)
    with vim.client(new_token) as api:
        assert_problem(api.get("/compute/v1/flavours"), 401)
    assert _token_response(vim, data={"grant_type": "client_credentials"},
                           auth=(consumer.client_id, new_secret)).json()["error"] == "invalid_client"


def test_the_last_admin_cannot_be_deleted_through_the_api(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    admin_row = next(row for row in vim.services.consumers.list() if row.client_id == ADMIN_ID)  # type: ignore[attr-defined]
    with vim.client() as admin:
        assert_problem(admin.delete(f"/admin/v1/consumers/{admin_row.id}"), 409)
        second = admin.post("/admin/v1/consumers", json={"consumerName": "ops-2", "scopes": ["admin"]})
        assert second.status_code == 201
        assert admin.delete(f"/admin/v1/consumers/{admin_row.id}").status_code == 204
        assert_problem(admin.get("/admin/v1/consumers"), 401)


def test_consumer_creation_is_validated(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as admin:
        assert_problem(admin.post("/admin/v1/consumers", json={"consumerName": "x", "scopes": ["root"]}), 400, "scopes")
        assert_problem(admin.post("/admin/v1/consumers", json={"consumerName": "x", "scopes": []}), 400)
        assert_problem(admin.post("/admin/v1/consumers", json={"consumerName": "x", "scopes": ["admin"],
                                                                "resourceGroupId": "bad group"}), 400)
        assert_problem(admin.post("/admin/v1/consumers", json={"consumerName": "x", "scopes": ["admin"],
                                                                "clientSecret": "mine"}), 400)
        own = admin.post("/admin/v1/consumers", json={"consumerName": "a", "scopes": ["compute:read"]}).json()
        other = admin.post("/admin/v1/consumers", json={"consumerName": "b", "scopes": ["compute:read"]}).json()
    assert own["resourceGroupId"] != other["resourceGroupId"], "each consumer gets a group of its own"


# --- rate limiting -----------------------------------------------------------------------------


def test_rate_limit_answers_429_with_headers(tmp_path: Path) -> None:
    vim = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", rate_limit_rate=0.5,
                       rate_limit_burst=3)
    try:
        first = vim.new_consumer(scopes=["compute:read"])
        second = vim.new_consumer(scopes=["compute:read"])
        with vim.anonymous() as anonymous:  # unauthenticated calls do not use a consumer's budget
            for _ in range(5):
                assert anonymous.get("/compute/v1/flavours").status_code == 401
        with first.client() as api:
            remaining = []
            for _ in range(3):
                response = api.get("/compute/v1/flavours")
                assert response.status_code == 200
                assert response.headers["ratelimit-limit"] == "3"
                remaining.append(int(response.headers["ratelimit-remaining"]))
                assert int(response.headers["ratelimit-reset"]) >= 1
            assert remaining == [2, 1, 0]
            limited = api.get("/compute/v1/flavours")
            body = assert_problem(limited, 429)
            assert body["cause"] == "RATE_LIMITED" and body["retryable"] is True
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["ratelimit-remaining"] == "0" and limited.headers["ratelimit-limit"] == "3"
            assert_problem(api.post("/compute/v1/flavours", json={}), 429)  # before validation, too
        with second.client() as api:  # buckets are per consumer (refilling is unit-tested)
            assert api.get("/compute/v1/flavours").status_code == 200
    finally:
        vim.stop()


def test_no_ratelimit_headers_when_disabled(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as api:
        assert "ratelimit-limit" not in api.get("/compute/v1/flavours").headers


# --- audit log ---------------------------------------------------------------------------------


def _audit(vim: RunningServer, query: str = "") -> list[dict]:
    entries: list[dict] = []
    url = f"/admin/v1/audit{query}"
    with vim.client() as admin:
        while url:
            response = admin.get(url)
            assert response.status_code == 200, response.text
            entries.extend(response.json())
            link = response.headers.get("link")
            url = link.split(";")[0].strip("<>") if link else ""
    return entries


def test_every_mutating_call_is_audited(database_url: str, tmp_path: Path) -> None:
    vim = start_server(tmp_path / "data", database_url, page_size=3)
    try:
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        writer = vim.new_consumer(scopes=["compute:read", "compute:write"])
        reader = vim.new_consumer(scopes=["compute:read"])
        with writer.client() as api:
            created = api.post("/compute/v1/flavours", json={"flavourId": "audited", "virtualCpu": {"numVirtualCpu": 1},
                                                             "virtualMemory": {"virtualMemSize": 512}})
            assert created.status_code == 201
            missing = api.delete("/compute/v1/flavours/no-such-flavour")
            assert missing.status_code == 404
            assert api.get("/compute/v1/flavours/audited").status_code == 200  # reads are not audited
        with reader.client() as api:
            forbidden = api.delete("/compute/v1/flavours/audited")
            assert forbidden.status_code == 403
        with vim.anonymous() as anonymous:
            unauthenticated = anonymous.post("/compute/v1/flavours", json={})
            assert unauthenticated.status_code == 401
            bad_version = anonymous.post("/compute/v1/flavours", json={}, headers={"Version": "9.0.0"})
            assert bad_version.status_code == 406
        failed_login = _token_response(vim, data={"grant_type": "client_credentials"}, auth=(writer.client_id, "nope"))
        assert failed_login.status_code == 401

        entries = _audit(vim)
        assert all(entry["method"] in ("POST", "PUT", "PATCH", "DELETE", "CLI") for entry in entries)
        by_request = {entry["requestId"]: entry for entry in entries}
        expectations = [
            (created, "POST", "/compute/v1/flavours", 201, writer.consumer_id),
            (missing, "DELETE", "/compute/v1/flavours/no-such-flavour", 404, writer.consumer_id),
            (forbidden, "DELETE", "/compute/v1/flavours/audited", 403, reader.consumer_id),
            (unauthenticated, "POST", "/compute/v1/flavours", 401, None),
            (bad_version, "POST", "/compute/v1/flavours", 406, None),
            (failed_login, "POST", TOKEN_PATH, 401, None),
        ]
        for response, method, path, status, consumer_id in expectations:
            entry = by_request[response.headers["x-request-id"]]
            assert (entry["method"], entry["path"], entry["status"], entry["consumerId"]) == \
                (method, path, status, consumer_id), entry
            assert entry["outcome"] == ("SUCCESS" if status < 400 else "FAILURE")
            assert entry["clientIp"] == "127.0.0.1"
            assert dt.datetime.fromisoformat(entry["time"]) >= started
            assert entry["durationMs"] is not None and entry["durationMs"] >= 0
        logins = [e for e in entries if e["path"] == TOKEN_PATH and e["status"] == 200]
        assert {writer.consumer_id, reader.consumer_id} <= {e["consumerId"] for e in logins}
        assert [e["auditId"] for e in entries] == sorted(e["auditId"] for e in entries)
        mine = _audit(vim, f"?consumerId={writer.consumer_id}")
        assert mine and all(entry["consumerId"] == writer.consumer_id for entry in mine)
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        assert _audit(vim, f"?since={future}") == []
        with vim.client() as admin:
            assert_problem(admin.get("/admin/v1/audit?nextpage_opaque_marker=garbage"), 400, "nextpage_opaque_marker")
            assert_problem(admin.get("/admin/v1/audit?bogus=1"), 400, "bogus")
    finally:
        vim.stop()


def test_audit_can_be_switched_off(tmp_path: Path) -> None:
    vim = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", audit_enabled=False)
    try:
        vim.new_consumer()
        assert _audit(vim) == []
    finally:
        vim.stop()


# --- secrets -----------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {text} {record.__dict__}")


@contextmanager
def _captured_logs() -> Iterator[_Capture]:
    capture = _Capture()
    # vimkit's own loggers at DEBUG; everything else (root) at the level it runs with in production.
    names = ["", "vimkit", "uvicorn", "uvicorn.error", "uvicorn.access"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(capture)
        if logger.name.startswith("vimkit"):
            logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(capture)
            logger.setLevel(level)


def _database_text(vim: RunningServer) -> str:
    engine = create_engine(vim.settings.effective_database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    parts = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                parts.append(repr(tuple(row)))
                parts.extend(value.decode("latin-1") for value in row if isinstance(value, bytes))
    engine.dispose()
    return "\n".join(parts)


def test_secrets_never_appear_after_creation(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    with _captured_logs() as logs:
        with vim.client() as admin:
            request = {"consumerName": "secretive", "scopes": ["compute:read"]}
            created = admin.post("/admin/v1/consumers", json=request, headers={"Idempotency-Key": "create-1"})
            assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
            consumer = created.json()
            secret = consumer["clientSecret"]
            assert len(secret) >= 32
            replay = admin.post("/admin/v1/consumers", json=request, headers={"Idempotency-Key": "create-1"})
            assert replay.status_code == 201 and replay.headers.get("idempotent-replayed") == "true"
            assert replay.json()["consumerId"] == consumer["consumerId"] and replay.json()["clientSecret"] is None

            token = vim.token(consumer["clientId"], secret)
            form_login = _token_response(vim, data={"grant_type": "client_credentials", "client_id": consumer["clientId"],
                                                    "client_secret": secret})
            assert form_login.status_code == 200
            # Secrets typed into the wrong field or with a typo must not leak either.
            assert _token_response(vim, data={"grant_type": "client_credentials"}, auth=(secret, secret)).status_code == 401
            assert _token_response(vim, data={"grant_type": "client_credentials"},
                                   auth=(consumer["clientId"], secret + "x")).status_code == 401

            path = f"/admin/v1/consumers/{consumer['consumerId']}/rotate_secret"
            rotated = admin.post(path, headers={"Idempotency-Key": "rotate-1"})
            new_secret = rotated.json()["clientSecret"]
            assert new_secret and new_secret != secret
            rotated_replay = admin.post(path, headers={"Idempotency-Key": "rotate-1"})
            assert rotated_replay.json()["clientSecret"] is None

            later = [
                replay, rotated_replay,
                admin.get("/admin/v1/consumers"),
                admin.get(f"/admin/v1/consumers/{consumer['consumerId']}"),
                admin.get("/admin/v1/audit"),
                admin.get("/openapi.json"),
            ]
        for response in later:
            assert response.status_code in (200, 201)
            for value in (secret, new_secret):
                assert value not in response.text and value not in str(response.headers)
        stored = _database_text(vim)
        assert "$argon2id$" in stored
        audit = str(_audit(vim))
    log_text = "\n".join(logs.lines)
    for value in (secret, new_secret, token, form_login.json()["access_token"], ADMIN_SECRET):
        assert value not in log_text, "a secret or token reached the logs"
        assert value not in audit, "a secret or token reached the audit log"
        assert value not in stored, "a secret or token is stored in clear text"


# --- external identity provider ----------------------------------------------------------------

EXTERNAL_ISSUER = "https://idp.example.test/realms/nfv"
EXTERNAL_AUDIENCE = "vimkit"


def _external_token(key: object, kid: str = "idp-1", **claims: object) -> str:
    now = int(time.time())
    body = {"iss": EXTERNAL_ISSUER, "aud": EXTERNAL_AUDIENCE, "sub": "ccm-external", "iat": now, "exp": now + 300,
            "scope": "compute:read compute:write admin", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


def test_tokens_of_an_external_issuer(tmp_path: Path, jwks: JwksServer) -> None:
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.add_key(idp_key, "idp-1", "RS256")
    vim = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", external_jwks_url=jwks.url,
                       external_issuer=EXTERNAL_ISSUER, external_audience=EXTERNAL_AUDIENCE)
    try:
        local = vim.new_consumer(resource_group_id="tenant-x")
        stranger = vim.new_consumer()
        external = _external_token(idp_key, rg="tenant-x")
        with vim.client(external) as api:
            created = api.post("/compute/v1/flavours", json={"flavourId": "ext-private", "isPublic": False,
                                                             "virtualCpu": {"numVirtualCpu": 1},
                                                             "virtualMemory": {"virtualMemSize": 512}})
            assert created.status_code == 201, created.text
            assert api.get("/compute/v1/flavours/ext-private").status_code == 200
            assert_problem(api.get("/admin/v1/consumers"), 403)  # admin is not honoured by default
        with local.client() as api:
            assert api.get("/compute/v1/flavours/ext-private").status_code == 200
        with stranger.client() as api:
            assert_problem(api.get("/compute/v1/flavours/ext-private"), 404)
        with vim.client(_external_token(idp_key, sub="ccm-other", scope="compute:read")) as api:
            assert_problem(api.get("/compute/v1/flavours/ext-private"), 404)  # a derived group of its own
            assert_problem(api.post("/compute/v1/flavours", json={}), 403)
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for bad in (_external_token(idp_key, aud="someone-else"), _external_token(idp_key, iss="https://evil.test"),
                    _external_token(idp_key, exp=int(time.time()) - 60), _external_token(other_key),
                    _external_token(other_key, kid="idp-unknown")):
            with vim.client(bad) as api:
                response = api.get("/compute/v1/flavours")
            assert_problem(response, 401)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
        entry = next(e for e in _audit(vim) if e["path"] == "/compute/v1/flavours" and e["status"] == 201)
        assert entry["consumerId"] == "ccm-external" and entry["resourceGroupId"] == "tenant-x"
        assert jwks.requests <= 3  # start-up fetch, (maybe) first use, one forced refresh for the unknown kid
    finally:
        vim.stop()


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_admin_from_the_environment_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vimkit.db'}"
    for _ in range(2):
        vim = start_server(tmp_path / "data", url)
        try:
            admins = [row for row in vim.services.consumers.list() if row.client_id == ADMIN_ID]  # type: ignore[attr-defined]
            assert len(admins) == 1 and set(admins[0].scopes) == set(ALL_SCOPES)
            assert vim.services.demo_credentials is None  # type: ignore[attr-defined]
            with vim.client() as admin:
                assert admin.get("/admin/v1/consumers").status_code == 200
        finally:
            vim.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(data_dir: Path, *args: str, admin: bool = True,
           ready: Callable[[str], bool] | None = None) -> Iterator[tuple[subprocess.Popen, str, int]]:
    """``vimkit serve`` as a child process on a free port; yields (process, stdout path, port)."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIMKIT_")}
    env.update({"VIMKIT_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})
    if admin:
        env.update({"VIMKIT_ADMIN_CLIENT_ID": ADMIN_ID, "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN_SECRET})
    out = data_dir.parent / f"serve-{port}.out"
    with open(out, "wb") as stdout, open(f"{out}.err", "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
            env=env, stdout=stdout, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60  # a loaded CI machine starts slowly
        while True:
            if process.poll() is not None:
                raise AssertionError(f"vimkit serve exited: {Path(f'{out}.err').read_text()}")
            if (ready or _plain_ready)(f"127.0.0.1:{port}"):
                break
            if time.monotonic() > deadline:
                raise AssertionError("vimkit serve did not become ready")
            time.sleep(0.1)
        yield process, str(out), port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _plain_ready(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_demo_credentials_are_printed_once_on_an_empty_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _serve(data_dir, admin=False) as (_, out, port):
        printed = Path(out).read_text()
        assert "Demo admin credentials (shown once)" in printed
        secret = printed.split("client secret:")[1].split()[0]
        client_id = printed.split("client id:")[1].split()[0]
        response = httpx.post(f"http://127.0.0.1:{port}{TOKEN_PATH}", data={"grant_type": "client_credentials"},
                              auth=(client_id, secret))
        assert response.status_code == 200 and "admin" in response.json()["scope"].split()
    assert secret not in Path(f"{out}.err").read_text(), "the demo secret reached the log"
    # A second start on the same database creates (and so prints) nothing.
    services = build_services(Settings(data_dir=data_dir, log_level="warning"))
    try:
        assert services.demo_credentials is None
        assert [row.client_id for row in services.consumers.list()] == [client_id]
    finally:
        services.close()


# --- TLS ---------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
                 usage: x509.ObjectIdentifier | None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pair(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("vimkit test CA", ca_key, None, None)
    rogue_ca = _certificate("rogue CA", rogue_key, None, None)
    ca_path, _ = _write_pair(pki, "ca", ca, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = _write_pair(
        pki, "server", _certificate("127.0.0.1", server_key, ("vimkit test CA", ca_key), ExtendedKeyUsageOID.SERVER_AUTH),
        server_key)
    client_cert, client_key_path = _write_pair(
        pki, "client", _certificate("ccm-1", client_key, ("vimkit test CA", ca_key), ExtendedKeyUsageOID.CLIENT_AUTH),
        client_key)
    rogue_cert, rogue_key_path = _write_pair(
        pki, "rogue", _certificate("ccm-rogue", client_key, ("rogue CA", rogue_key), ExtendedKeyUsageOID.CLIENT_AUTH),
        client_key)
    del rogue_ca

    def context(cert: Path | None = None, key: Path | None = None, tls12: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_path))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def ready(address: str) -> bool:
        try:
            return httpx.get(f"https://{address}/readyz", verify=context(client_cert, client_key_path),
                             timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    args = ("--tls-cert", str(server_cert), "--tls-key", str(server_key_path), "--tls-client-ca", str(ca_path))
    with _serve(tmp_path / "data", *args, ready=ready) as (_, out, port):
        base = f"https://127.0.0.1:{port}"
        assert f"listening on https://127.0.0.1:{port}" in Path(out).read_text()
        with httpx.Client(base_url=base, verify=context(client_cert, client_key_path), timeout=10) as client:
            token = client.post(TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=(ADMIN_ID, ADMIN_SECRET))
            assert token.status_code == 200
            flavours = client.get("/compute/v1/flavours",
                                  headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            assert flavours.status_code == 200
        for name, ctx in {
            "no client certificate (TLS 1.3)": context(),
            "no client certificate (TLS 1.2)": context(tls12=True),
            "certificate of another CA": context(rogue_cert, rogue_key_path),
        }.items():
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{base}/healthz", verify=ctx, timeout=5)
                pytest.fail(f"{name}: the server accepted the connection")
        with pytest.raises(ssl.SSLError):  # the handshake itself fails without a certificate
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context(tls12=True).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.recv(1)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_bad_tls_settings_stop_start_up_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vimkit.cli.main import app

    runner = CliRunner()
    missing = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "nope.pem"),
                                  "--tls-key", str(tmp_path / "nope.key")])
    assert missing.exit_code == 2 and "tls_cert" in missing.output
    half = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "nope.pem")])
    assert half.exit_code == 2 and "tls_key" in half.output

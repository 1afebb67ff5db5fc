"""Every operation of ``/openapi.json`` is protected by authentication and its scope.

The operations are read from the running server's OpenAPI document, so a route added by a later
issue is covered without touching this file. Only the resources rest-binding.md §1.1 names are
public. For every other operation:

- no token → 401 with ``WWW-Authenticate: Bearer`` (before any parameter or body is looked at);
- a valid token with every scope except the operation's → 403, and a token with only that scope
  passes authorisation (whatever the handler then says, never a 5xx);
- expired, tampered, wrong-audience, wrong-issuer, wrong-key, unknown-key, ``alg: none`` and
  revoked tokens → 401.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import RunningServer, admin_claims, assert_problem, forge_token
from vimkit.auth.scopes import ALL_SCOPES

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC_PATTERNS = [
    ("get", re.compile(r"^/[a-z-]+(/v1)?/api_versions$")),
    ("get", re.compile(r"^/(healthz|readyz|openapi\.json)$")),
    ("post", re.compile(r"^/oauth2/token$")),
]


def _is_public(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern in PUBLIC_PATTERNS)


def _operations(vim: RunningServer) -> list[tuple[str, str, dict]]:
    with vim.anonymous() as client:
        document = client.get("/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                found.append((method, path, operation))
    assert len(found) >= 10, "the OpenAPI document lists too few operations"
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "auth-walk-probe", path)


def _call(client: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"json": {}} if method in ("post", "put", "patch") else {}
    return client.request(method.upper(), _concrete(path), headers=headers, **body)


def _required_scope(response: httpx.Response) -> str | None:
    if response.status_code != 403:
        return None
    match = re.search(r'scope="([^"]+)"', response.headers.get("www-authenticate", ""))
    return match.group(1) if match else None


def test_every_operation_requires_a_token_and_its_scope(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    everything = vim.new_consumer(scopes=list(ALL_SCOPES))
    probes = ["storage-info:subscribe", "network-info:subscribe"]  # no operation needs both
    failures: list[str] = []
    protected = 0
    with vim.anonymous() as client:
        for method, path, operation in _operations(vim):
            name = f"{method.upper()} {path}"
            anonymous = _call(client, method, path, None)
            if _is_public(method, path):
                if anonymous.status_code in (401, 403):
                    failures.append(f"{name}: public resource answered {anonymous.status_code}")
                continue
            protected += 1
            if anonymous.status_code != 401 or not anonymous.headers.get("www-authenticate", "").startswith("Bearer"):
                failures.append(f"{name}: without a token {anonymous.status_code} "
                                f"{anonymous.headers.get('www-authenticate')!r}")
                continue
            assert_problem(anonymous, 401)
            scope = None
            for probe in probes:
                scope = _required_scope(_call(client, method, path, everything.token(probe)))
                if scope:
                    break
            if scope is None or scope not in ALL_SCOPES:
                failures.append(f"{name}: could not learn its scope from a 403 (got {scope!r})")
                continue
            declared = operation.get("security")
            if declared is not None and declared != [{"oauth2": [scope]}]:
                failures.append(f"{name}: OpenAPI declares {declared}, the server enforces {scope}")
            lacking = everything.token(" ".join(s for s in ALL_SCOPES if s != scope))
            refused = _call(client, method, path, lacking)
            if refused.status_code != 403:
                failures.append(f"{name}: a token with every scope but {scope} got {refused.status_code}")
            else:
                assert_problem(refused, 403)
            allowed = _call(client, method, path, everything.token(scope))
            if allowed.status_code in (401, 403) or allowed.status_code >= 500:
                failures.append(f"{name}: a token with just {scope} got {allowed.status_code}: {allowed.text[:200]}")
    assert protected >= 5
    assert not failures, "\n".join(failures)


def _revoked_token(vim: RunningServer) -> str:
    consumer = vim.new_consumer(scopes=list(ALL_SCOPES))
    token = consumer.token()
    with vim.client() as admin:
        assert admin.post(f"/admin/v1/consumers/{consumer.consumer_id}/rotate_secret").status_code == 200
    return token


def _bad_tokens(vim: RunningServer) -> dict[str, str]:
    now = int(time.time())
    good = forge_token(vim)
    head, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["rg"] = "someone-elses-group"
    tampered = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    stranger = ec.generate_private_key(ec.SECP256R1())
    return {
        "expired": forge_token(vim, exp=now - 120, iat=now - 3700, nbf=now - 3700),
        "tampered": f"{head}.{tampered}.{signature}",
        "wrong audience": forge_token(vim, aud="not-vimkit"),
        "wrong issuer": forge_token(vim, iss="not-vimkit"),
        "wrong key with the current kid": forge_token(vim, key=stranger),
        "unknown kid": forge_token(vim, key=stranger, kid="feedfacecafebeef"),
        "alg none": jwt.encode(admin_claims(vim), None, algorithm="none"),
        "revoked": _revoked_token(vim),
        "garbage": "a.b.c",
    }


def test_bad_tokens_are_refused_on_every_operation(sqlite_vim: RunningServer) -> None:
    vim = sqlite_vim
    bad = _bad_tokens(vim)
    with vim.anonymous() as client:
        control = forge_token(vim)
        assert client.get("/admin/v1/consumers", headers={"Authorization": f"Bearer {control}"}).status_code == 200
        failures = []
        for method, path, _ in _operations(vim):
            if _is_public(method, path):
                continue
            for name, token in bad.items():
                response = _call(client, method, path, token)
                challenge = response.headers.get("www-authenticate", "")
                if response.status_code != 401 or not challenge.startswith("Bearer") or "invalid_token" not in challenge:
                    failures.append(f"{method.upper()} {path} with a {name} token: {response.status_code} {challenge!r}")
                else:
                    assert_problem(response, 401)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "bearer", "Bearer a b"])
def test_malformed_authorization_headers(sqlite_vim: RunningServer, header: str) -> None:
    with sqlite_vim.anonymous() as client:
        response = client.get("/compute/v1/flavours", headers={"Authorization": header})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")

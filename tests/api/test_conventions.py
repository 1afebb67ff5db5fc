"""The common conventions of rest-binding.md §1 that do not depend on a resource type."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import RunningServer, assert_problem
from vimkit.auth.scopes import API_SCOPES

API_NAMES = list(API_SCOPES)


@pytest.mark.parametrize("api", API_NAMES)
def test_api_versions_of_every_root_are_public(sqlite_vim: RunningServer, api: str) -> None:
    with sqlite_vim.anonymous() as client:
        for path in (f"/{api}/api_versions", f"/{api}/v1/api_versions"):
            response = client.get(path)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["uriPrefix"].endswith(f"/{api}/v1")
            assert body["apiVersions"] == [{"version": "1.0.0"}]
            assert response.headers["version"] == "1.0.0"
            assert_problem(client.post(path, json={}), 405)
            assert_problem(client.delete(path), 405)


def test_version_header(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as client:
        assert client.get("/compute/v1/flavours", headers={"Version": "1.0.0"}).status_code == 200
        assert client.get("/compute/v1/flavours", headers={"Version": "1.0.0"}).headers["version"] == "1.0.0"
        assert_problem(client.get("/compute/v1/flavours", headers={"Version": "one"}), 400, "Version")
        assert_problem(client.get("/compute/v1/flavours", headers={"Version": "2.0.0"}), 406)
        assert_problem(client.get("/compute/v1/flavours", headers={"Version": "1.9.0"}), 406)


def test_framework_errors_are_problem_details(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as client:
        assert_problem(client.get("/no/such/path"), 404)
        assert_problem(client.put("/compute/v1/flavours/m1.small", json={}), 405)
        assert_problem(client.patch("/compute/v1/flavours", json={}), 405)


def test_authentication_is_required_and_scopes_are_enforced(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.anonymous() as client:
        response = client.get("/compute/v1/flavours")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        bad = client.get("/compute/v1/flavours", headers={"Authorization": "Bearer not.a.token"})
        assert_problem(bad, 401)
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    reader = sqlite_vim.new_consumer(scopes=["compute:read"])
    with reader.client() as client:
        assert client.get("/compute/v1/flavours").status_code == 200
        body = assert_problem(client.post("/compute/v1/flavours", json={}), 403)
        assert "compute:write" in body["detail"]


def test_token_endpoint_errors_follow_rfc6749(sqlite_vim: RunningServer) -> None:
    url = f"{sqlite_vim.base_url}/oauth2/token"
    wrong = httpx.post(url, data={"grant_type": "client_credentials"}, auth=("test-admin", "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = httpx.post(url, data={"grant_type": "password"}, auth=("test-admin", "x"))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    consumer = sqlite_vim.new_consumer(scopes=["compute:read"])
    narrowed = httpx.post(url, data={"grant_type": "client_credentials", "client_id": consumer.client_id,
                                     "client_secret": consumer.client_secret, "scope": "compute:write"})
    assert narrowed.status_code == 400 and narrowed.json()["error"] == "invalid_scope"
    ok = httpx.post(url, data={"grant_type": "client_credentials", "client_id": consumer.client_id,
                               "client_secret": consumer.client_secret, "scope": "compute:read"})
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer" and ok.json()["scope"] == "compute:read"
    assert "no-store" in ok.headers["cache-control"]


def test_health_and_readiness(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.anonymous() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}


def test_request_id_is_echoed(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.anonymous() as client:
        assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
        generated = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
        assert len(generated) == 3 and all(len(value) == 16 for value in generated)


def test_openapi_document_names_every_route_and_error(sqlite_vim: RunningServer) -> None:
    from openapi_spec_validator import validate

    with sqlite_vim.anonymous() as client:
        document = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    validate(document)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            errors = [code for code in responses if code.startswith(("4", "5"))]
            assert errors, f"{method} {path} documents no error response"
    assert document["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["tokenUrl"] == "/oauth2/token"
    assert document["paths"]["/compute/v1/flavours"]["post"]["security"] == [{"oauth2": ["compute:write"]}]


def test_write_requests_are_counted_while_served_and_never_left_counted(sqlite_vim: RunningServer) -> None:
    """The count lazy completions consult (vimkit.store.group_commit.Demand): whatever the answer,
    a finished request is no longer counted."""
    demand = sqlite_vim.services.demand  # type: ignore[attr-defined]
    with sqlite_vim.client() as client, sqlite_vim.anonymous() as anonymous:
        assert client.post("/compute/v1/flavours", json={"flavourId": "counted", "virtualCpu": {"numVirtualCpu": 1},
                                                         "virtualMemory": {"virtualMemSize": 512},
                                                         "storageAttributes": []}).status_code < 500
        assert_problem(client.post("/compute/v1/computes", json={}), 400)
        assert_problem(client.post("/compute/v1/computes", json={}, headers={"Version": "one"}), 400, "Version")
        assert_problem(client.post("/compute/v1/computes", content=b"x" * (2 << 20),
                                   headers={"Content-Type": "application/json"}), 413)
        assert_problem(anonymous.delete("/compute/v1/computes/nothing"), 401)
        assert client.get("/compute/v1/flavours").status_code == 200
    deadline = time.monotonic() + 5
    while demand.requests and time.monotonic() < deadline:  # the count drops after the answer is sent
        time.sleep(0.01)
    assert demand.requests == 0

"""POSTs that take a JSON body model, and routes that take only path parameters (a GET or
DELETE of one resource), go straight to their endpoint (api/routing.py); every other request, and
every body or path parameter that does not parse or validate, is answered by FastAPI's own
handler, so the answers are the same as they would be without the shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from tests.conftest import RunningServer, assert_problem
from tests.receivers import Receiver
from vimkit.app import create_app
from vimkit.config import Settings

ADMIN = ("direct-admin", "direct-admin-secret-0123456789")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("direct")
    return create_app(Settings(data_dir=data, database_url=f"sqlite:///{Path(data) / 'v.db'}", log_level="warning",
                               admin_client_id=ADMIN[0], admin_client_secret=ADMIN[1]))


def _direct(app, kind: str = "direct_body") -> dict[tuple[str, str], bool]:
    return {(method, route.path): getattr(route, kind, False)
            for route in app.router.routes if isinstance(route, APIRoute) for method in route.methods}


def test_one_resource_routes_take_the_direct_path_and_others_do_not(app) -> None:
    direct = _direct(app, "direct_path")
    for method, path in (("GET", "/compute/v1/computes/{computeId}"), ("GET", "/compute/v1/flavours/{flavourId}"),
                         ("GET", "/network/v1/ports/{portId}"), ("GET", "/storage/v1/storages/{storageId}"),
                         ("DELETE", "/compute/v1/subscriptions/{subscriptionId}")):
        assert direct[(method, path)], (method, path)
    assert not direct[("GET", "/compute/v1/computes")]  # query parameters
    assert not direct[("PATCH", "/compute/v1/computes/{computeId}")]  # a body and If-Match
    assert not direct[("DELETE", "/compute/v1/computes/{computeId}")]  # If-Match
    assert not direct[("POST", "/compute/v1/computes/{computeId}/operate")]  # a body
    assert not any(direct[key] and _direct(app)[key] for key in direct)


def test_one_resource_routes_answer_as_before(sqlite_vim: RunningServer) -> None:
    receiver = Receiver().start()
    try:
        _one_resource_routes(sqlite_vim, receiver)
    finally:
        receiver.stop()


def _one_resource_routes(sqlite_vim: RunningServer, receiver: Receiver) -> None:
    with sqlite_vim.client() as client, sqlite_vim.anonymous() as anonymous:
        flavour = client.get("/compute/v1/flavours/m1.tiny")
        assert flavour.status_code == 200, flavour.text
        assert flavour.json()["flavourId"] == "m1.tiny" and flavour.headers["etag"]
        again = client.get("/compute/v1/flavours/m1.tiny", headers={"If-None-Match": flavour.headers["etag"]})
        assert again.status_code == 304
        assert_problem(client.get("/compute/v1/computes/nope"), 404)
        # A path parameter that does not validate: FastAPI's handler names it, as before.
        assert_problem(client.get("/compute/v1/computes/" + "x" * 65), 400, "computeId")
        # Who is calling comes first, on this path too.
        assert_problem(anonymous.get("/compute/v1/flavours/m1.tiny"), 401)
        subscription = client.post("/compute/v1/subscriptions", json={"callbackUri": receiver.url})
        assert subscription.status_code == 201, subscription.text
        sid = subscription.json()["id"]
        assert client.get(f"/compute/v1/subscriptions/{sid}").json()["id"] == sid
        assert client.delete(f"/compute/v1/subscriptions/{sid}").status_code == 204
        assert_problem(client.get(f"/compute/v1/subscriptions/{sid}"), 404)


def test_creation_routes_take_the_direct_path_and_others_do_not(app) -> None:
    direct = _direct(app)
    for path in ("/network/v1/ports", "/network/v1/networks", "/compute/v1/computes", "/storage/v1/storages",
                 "/compute/v1/flavours", "/compute/v1/subscriptions"):
        assert direct[("POST", path)], path
    # Path or query parameters, other bodies: FastAPI's handler.
    assert not direct[("POST", "/compute/v1/computes/{computeId}/operate")]
    assert not direct[("GET", "/compute/v1/computes")]
    assert not direct[("POST", "/oauth2/token")]  # a form


def test_bodies_the_direct_path_does_not_take_answer_as_before(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as client:
        network = client.post("/network/v1/networks", json={"networkResourceName": "direct"})
        assert network.status_code == 201, network.text
        network_id = network.json()["networkResourceId"]
        url = "/network/v1/ports"
        body = f'{{"networkId": "{network_id}"}}'.encode()
        # Not JSON at all, JSON the strict parser refuses (NaN), an unknown media type.
        assert_problem(client.post(url, content=b"{nope", headers={"Content-Type": "application/json"}), 400, "body")
        nan = client.post(url, content=b'{"networkId": "' + network_id.encode() + b'", "bandwidth": NaN}',
                          headers={"Content-Type": "application/json"})
        assert nan.status_code == 400, nan.text
        assert_problem(client.post(url, content=body, headers={"Content-Type": "text/plain"}), 400)
        # A body that parses but does not validate names the member.
        assert_problem(client.post(url, json={"networkId": network_id, "macAddress": 7}), 400, "macAddress")
        assert_problem(client.post(url, json=[network_id]), 400)
        # A media type with parameters is still JSON, and takes the direct path.
        created = client.post(url, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert created.status_code == 201, created.text
        assert created.json()["networkId"] == network_id


"""POSTs that take a JSON body model go straight to their endpoint (api/routing.py); every other
request, and every body that does not parse or validate, is answered by FastAPI's own handler, so
the answers are the same as they would be without the shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from tests.conftest import RunningServer, assert_problem
from vimkit.app import create_app
from vimkit.config import Settings

ADMIN = ("direct-admin", "direct-admin-secret-0123456789")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("direct")
    return create_app(Settings(data_dir=data, database_url=f"sqlite:///{Path(data) / 'v.db'}", log_level="warning",
                               admin_client_id=ADMIN[0], admin_client_secret=ADMIN[1]))


def _direct(app) -> dict[tuple[str, str], bool]:
    return {(method, route.path): getattr(route, "direct_body", False)
            for route in app.router.routes if isinstance(route, APIRoute) for method in route.methods}


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


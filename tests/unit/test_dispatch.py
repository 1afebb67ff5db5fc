"""The route index picks exactly the route Starlette's full scan picks, for every route."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import Match, Route

from vimkit.api.dispatch import RouteIndex, root_of
from vimkit.app import create_app
from vimkit.config import Settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


def full_scan(routes: list, scope: dict) -> tuple | None:
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return route, child
        if match == Match.PARTIAL and partial is None:
            partial = (route, child)
    return partial


def scope_for(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("dispatch")
    return create_app(Settings(data_dir=data, database_url=f"sqlite:///{Path(data) / 'v.db'}", log_level="warning"))


def test_root_of() -> None:
    assert root_of("/network/v1/ports/{portId}") == "/network/v1"
    assert root_of("/healthz") == "/healthz"
    assert root_of("/{anything}/v1") is None


def test_the_application_dispatches_through_the_index(app) -> None:
    assert isinstance(app.router.middleware_stack, RouteIndex)


def test_index_agrees_with_the_full_scan_for_every_route_and_method(app) -> None:
    index = RouteIndex(app.router)
    routes = list(app.router.routes)
    paths = {re.sub(r"\{[^}]+\}", "some-id", route.path) for route in routes if isinstance(route, Route)}
    paths |= {path + "/" for path in paths} | {"/compute/v1/nothing-here", "/nowhere/v9/x", "/"}
    checked = 0
    for path in sorted(paths):
        for method in METHODS:
            expected = full_scan(routes, scope_for(method, path))
            selected = index.select(scope_for(method, path))
            if selected is None:
                # Left to the full scan: only when it finds nothing either.
                assert expected is None, (method, path)
                continue
            assert expected is not None and selected[0] is expected[0], (method, path)
            assert selected[1] == expected[1]
            checked += 1
    assert checked > 200


def test_unknown_paths_and_wrong_methods_through_http(vim) -> None:
    with vim.client() as client:
        assert client.get("/compute/v1/no-such-thing").status_code == 404
        assert client.get("/no-such-root/v1/x").status_code == 404
        wrong = client.put("/compute/v1/flavours")
        assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
        assert client.get("/compute/v1/flavours/m1.tiny").status_code == 200

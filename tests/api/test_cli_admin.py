"""``vimkit consumers …`` and ``vimkit keys …`` act on the database and data directory directly;
their effects are checked through the HTTP API of a server on the same database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from typer.testing import CliRunner, Result

from tests.conftest import RunningServer, assert_problem, start_server
from vimkit.cli.main import app

runner = CliRunner()


def _cli(data_dir: Path, database_url: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir), "--database-url", database_url])


def _token(vim: RunningServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(f"{vim.base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                      auth=(client_id, secret))


def _eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    """Another process's change reaches a running server within its one-second revocation cache."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_consumer_commands_take_effect_on_a_running_server(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = _cli(data_dir, database_url, "consumers", "create", "ccm-cli", "--scope", "compute:read",
                   "-s", "network:read,storage:read", "--resource-group", "tenant-cli", "--json")
    assert created.exit_code == 0, created.output
    consumer = json.loads(created.stdout)
    assert consumer["scopes"] == ["compute:read", "network:read", "storage:read"]
    assert consumer["resourceGroupId"] == "tenant-cli" and len(consumer["clientSecret"]) >= 32

    vim = start_server(data_dir, database_url)
    try:
        response = _token(vim, consumer["clientId"], consumer["clientSecret"])
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        with vim.client(token) as api:
            assert api.get("/compute/v1/flavours").status_code == 200
            assert_problem(api.post("/compute/v1/flavours", json={}), 403)
        with vim.client() as admin:
            listed = admin.get(f"/admin/v1/consumers/{consumer['consumerId']}").json()
        assert listed["clientId"] == consumer["clientId"] and listed["resourceGroupId"] == "tenant-cli"

        listing = _cli(data_dir, database_url, "consumers", "list", "--json")
        assert listing.exit_code == 0
        rows = {row["consumerId"]: row for row in json.loads(listing.stdout)}
        assert rows[consumer["consumerId"]]["clientId"] == consumer["clientId"]
        assert consumer["clientSecret"] not in listing.output and "argon2" not in listing.output
        text_listing = _cli(data_dir, database_url, "consumers", "list")
        assert text_listing.exit_code == 0 and consumer["clientId"] in text_listing.output

        rotated = _cli(data_dir, database_url, "consumers", "rotate-secret", consumer["clientId"], "--json")
        assert rotated.exit_code == 0, rotated.output
        new_secret = json.loads(rotated.stdout)["clientSecret"]
        assert new_secret != consumer["clientSecret"]
        with vim.client(token) as api:
            assert _eventually(lambda: api.get("/compute/v1/flavours").status_code == 401)
        assert _token(vim, consumer["clientId"], consumer["clientSecret"]).json()["error"] == "invalid_client"
        new_token = _token(vim, consumer["clientId"], new_secret).json()["access_token"]
        with vim.client(new_token) as api:
            assert api.get("/compute/v1/flavours").status_code == 200

        deleted = _cli(data_dir, database_url, "consumers", "delete", consumer["consumerId"])
        assert deleted.exit_code == 0, deleted.output
        with vim.client(new_token) as api:
            assert _eventually(lambda: api.get("/compute/v1/flavours").status_code == 401)
        assert _token(vim, consumer["clientId"], new_secret).status_code == 401

        with vim.client() as admin:
            audit = admin.get("/admin/v1/audit").json()
        actions = [entry["path"] for entry in audit if entry["method"] == "CLI"]
        assert actions == [f"consumers create {consumer['consumerId']}",
                           f"consumers rotate-secret {consumer['consumerId']}",
                           f"consumers delete {consumer['consumerId']}"]
        assert consumer["clientSecret"] not in str(audit) and new_secret not in str(audit)
    finally:
        vim.stop()


def test_consumer_command_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vimkit.db'}"
    unknown_scope = _cli(tmp_path, url, "consumers", "create", "x", "--scope", "root")
    assert unknown_scope.exit_code == 1 and "unknown scope 'root'" in unknown_scope.output
    bad_group = _cli(tmp_path, url, "consumers", "create", "x", "--scope", "admin", "--resource-group", "a b")
    assert bad_group.exit_code == 1 and "resourceGroupId" in bad_group.output
    assert _cli(tmp_path, url, "consumers", "delete", "nobody").exit_code == 1
    assert _cli(tmp_path, url, "consumers", "rotate-secret", "nobody").exit_code == 1
    text = _cli(tmp_path, url, "consumers", "create", "ops", "--scope", "admin", "--client-id", "ops-1")
    assert text.exit_code == 0 and "client secret:" in text.output and "ops-1" in text.output
    duplicate = _cli(tmp_path, url, "consumers", "create", "ops", "--scope", "admin", "--client-id", "ops-1")
    assert duplicate.exit_code == 1 and "already in use" in duplicate.output
    assert _cli(tmp_path, "mysql://nope", "consumers", "list").exit_code == 2


def test_key_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    data_dir, url = tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}"
    vim = start_server(data_dir, url)
    try:
        old_token = vim.token()
        old_kid = jwt.get_unverified_header(old_token)["kid"]
        rotated = _cli(data_dir, url, "keys", "rotate", "--json")
        assert rotated.exit_code == 0, rotated.output
        result = json.loads(rotated.stdout)
        new_kid = result["kid"]
        assert result["previous"] == old_kid and new_kid != old_kid

        def issued_kid() -> str:
            response = httpx.post(f"{vim.base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                                  auth=(vim.settings.admin_client_id, vim.settings.admin_client_secret.get_secret_value()))
            return jwt.get_unverified_header(response.json()["access_token"])["kid"]

        assert _eventually(lambda: issued_kid() == new_kid), "the running server did not pick up the new key"
        listed = json.loads(_cli(data_dir, url, "keys", "list", "--json").stdout)
        assert [(key["kid"], key["status"]) for key in listed] == [(old_kid, "verify-only"), (new_kid, "signing")]
        text = _cli(data_dir, url, "keys", "list")
        assert text.exit_code == 0 and new_kid in text.output and "BEGIN" not in text.output
        with vim.client(old_token) as api:
            assert api.get("/compute/v1/flavours").status_code == 200
    finally:
        vim.stop()
    # A restarted server (no token cache) still accepts tokens of the previous key.
    vim = start_server(data_dir, url)
    try:
        with vim.client(old_token) as api:
            assert api.get("/compute/v1/flavours").status_code == 200
        with vim.client() as admin:
            audit = admin.get("/admin/v1/audit").json()
        assert f"keys rotate {new_kid}" in [entry["path"] for entry in audit]
    finally:
        vim.stop()

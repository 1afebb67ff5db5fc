"""Schemathesis over the server's own /openapi.json, through real HTTP on loopback.

Every operation gets generated valid and invalid requests; all of schemathesis's checks hold the
server to its document (no 5xx, documented status codes, content types, headers and schemas),
and the hook in ``schemathesis_hooks.py`` requires every error to be RFC 9457 problem details.
The CLI is used (not the pytest plugin) because it is the supported interface across versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_server

# 137 operations: about 4 minutes on an idle 2-core machine, much more on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
HOOKS = "tests.api.schemathesis_hooks"
ROOT = Path(__file__).resolve().parents[2]


def test_every_operation_conforms_to_the_openapi_document(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", rate_limit_rate=0)
    try:
        token = server.token()
        env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(ROOT)}
        command = [
            str(Path(sys.executable).with_name("st")), "run", f"{server.base_url}/openapi.json",
            "--checks", "all",
            # ignored_auth: the admin token sent to every call has every scope (auth is walked route
            # by route in test_route_auth_walk.py). positive_data_acceptance: the SOL 013 filter
            # grammar, selector combinations and If-Match values cannot be expressed in JSON
            # Schema, so "schema-valid" strings there are legitimately refused with 400/412.
            "--exclude-checks", "ignored_auth,positive_data_acceptance",
            "--generation-database", "none",
            # Fuzzing these would delete or re-key the consumer whose token the run uses (its id
            # is in the consumer list); test_security.py covers them explicitly.
            "--exclude-path-regex", r"^/admin/v1/consumers/\{consumer_id\}",
            "--max-examples", "20",
            "--workers", "1",
            "--seed", "20261125",
            "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: Bearer {token}",
            "--suppress-health-check", "all",
            "--no-color",
            "--report", "junit",
            "--report-dir", str(tmp_path / "report"),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1400, cwd=tmp_path)
        output = result.stdout + result.stderr
        (tmp_path / "schemathesis.out").write_text(output)
        assert result.returncode == 0, output[-20000:]
    finally:
        server.stop()

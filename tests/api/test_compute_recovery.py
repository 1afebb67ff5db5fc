"""SIGKILL the server while computes are being allocated, operated and terminated; after a
restart no compute is left ALLOCATING, UPDATING or TERMINATING and nothing is leaked.

The simulated driver runs with realistic latencies (``VIMKIT_SIM_LATENCY_SCALE=100``: creating
a compute takes about half a second) so that the kill lands in the middle of the tasks.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.api.test_compute import COMPUTE_INVENTORY
from tests.api.test_crash_recovery import _free_port
from tests.conftest import ADMIN_ID, ADMIN_SECRET

pytestmark = pytest.mark.slow


def _serve(data_dir: Path, port: int, latency: str):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    inventory = data_dir.parent / "inventory.toml"
    inventory.write_text(COMPUTE_INVENTORY)
    env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN_ID, "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN_SECRET,
           "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_SIM_LATENCY_SCALE": latency,
           "VIMKIT_INVENTORY_FILE": str(inventory)}
    process = subprocess.Popen(
        [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("vimkit serve did not become ready")


def test_sigkill_in_the_middle_of_compute_tasks_leaves_nothing_half_done(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    server = _serve(data_dir, port, "100")
    try:
        token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                           auth=(ADMIN_ID, ADMIN_SECRET)).json()["access_token"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            network = api.post("/network/v1/networks", json={"networkResourceName": "n", "networkType": "vlan"})
            assert network.status_code == 201, network.text
            network_id = network.json()["networkResourceId"]
            subnet = api.post("/network/v1/subnets", json={"networkId": network_id, "cidr": "10.9.0.0/24",
                                                           "ipVersion": "IPv4"})
            assert subnet.status_code == 201, subnet.text
            steady = [api.post("/compute/v1/computes", json={"computeFlavourId": "m1.tiny"},
                               headers={"Prefer": "wait=30"}).json()["computeId"] for _ in range(2)]
            rebooting = api.post(f"/compute/v1/computes/{steady[0]}/operate", json={"computeOperation": "REBOOT"})
            assert rebooting.status_code == 202, rebooting.text
            terminating = api.delete(f"/compute/v1/computes/{steady[1]}")
            assert terminating.status_code == 202, terminating.text
            allocating = []
            for _ in range(4):
                created = api.post("/compute/v1/computes", json={"computeFlavourId": "m1.tiny",
                                                                 "interfaceData": [{"networkId": network_id}]})
                assert created.status_code == 201, created.text
                allocating.append(created.json()["computeId"])
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)

        server = _serve(data_dir, port, "0")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            computes = {c["computeId"]: c for c in api.get("/compute/v1/computes").json()}
            states = {c["provisioningState"] for c in computes.values()}
            assert states <= {"ALLOCATED", "FAILED"}, states
            assert computes[steady[0]]["provisioningState"] == "ALLOCATED"
            assert computes[steady[0]]["lastOperation"]["status"] in ("COMPLETED", "FAILED")
            assert steady[1] not in computes or computes[steady[1]]["provisioningState"] == "ALLOCATED"
            failed = [c for c in computes.values() if c["provisioningState"] == "FAILED"]
            assert failed, "the kill landed after every allocation had finished: nothing was tested"
            assert all(c["computeId"] in allocating and c["error"]["cause"] for c in failed)
            allocated = [c for c in computes.values() if c["provisioningState"] == "ALLOCATED"]
            # Capacity is held by exactly the ALLOCATED computes; ports only by their NICs.
            capacity = api.get("/compute-info/v1/capacity").json()
            assert capacity["vcpus"]["allocated"] == len(allocated)
            nic_ports = {n["networkPortId"] for c in allocated for n in c["virtualNetworkInterface"]}
            attached = {p["resourceId"] for p in api.get("/network/v1/ports").json() if p["attachedResourceId"]}
            assert attached == nic_ports
            # The FAILED ones can be deleted, and the rest terminated: nothing is left.
            for compute_id in computes:
                assert api.delete(f"/compute/v1/computes/{compute_id}", headers={"Prefer": "wait=30"}).status_code \
                    == 204
            assert api.get("/compute-info/v1/capacity").json()["vcpus"]["allocated"] == 0
            assert not [p for p in api.get("/network/v1/ports").json() if p["attachedResourceId"]]
    finally:
        server.kill()
        server.wait(timeout=10)

"""Real VMs through the HTTP API: two computes on one VXLAN network with a volume each, their HTTP
responders reached over the bridge, a disk hot-plugged, then nothing left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, start_server
from tests.qemu.conftest import BOOT_TIMEOUT, kill_leftovers, qemu_pids
from vimkit.drivers.qemu import local_inventory_toml

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(900)]
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def qvim(tmp_path: Path, guest_dir: Path) -> Iterator[RunningServer]:
    data = tmp_path / "data"
    (data / "qemu").mkdir(parents=True)
    inventory = data / "qemu" / "inventory.toml"
    inventory.write_text(local_inventory_toml(data))
    server = start_server(data, f"sqlite:///{tmp_path / 'vimkit.db'}", driver="qemu", inventory_file=inventory,
                          qemu_guest_dir=guest_dir, qemu_accel="tcg", qemu_boot_timeout=BOOT_TIMEOUT,
                          qemu_stop_timeout=2.0, qemu_max_concurrent_boots=2)
    driver = server.services.infrastructure.driver
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            kill_leftovers(data / "qemu", driver.namespace.name)


def wait_for(predicate, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def serial_command(path: Path, command: str, expect: str, timeout: float = 30.0) -> str:
    """Run ``command`` on a guest's serial console shell; return the console output up to ``expect``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.settimeout(1.0)
        sock.sendall(f"\n{command}\n".encode())
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            seen += chunk
            # The command is echoed: look for the answer on a line of its own.
            if any(line.strip() == expect for line in seen.decode(errors="replace").splitlines()):
                return seen.decode(errors="replace")
        raise AssertionError(f"no {expect!r} on the console: {seen.decode(errors='replace')[-500:]}")


def test_two_guests_on_one_network(qvim: RunningServer) -> None:
    driver = qvim.services.infrastructure.driver
    state_dir = driver.config.state_dir
    with qvim.new_consumer().client() as api:
        network = api.post("/network/v1/networks", json={"networkResourceName": "lan", "networkType": "vxlan"})
        assert network.status_code == 201, network.text
        network_id = network.json()["networkResourceId"]
        subnet = api.post("/network/v1/subnets", json={"networkId": network_id, "cidr": "10.77.0.0/24",
                                                       "ipVersion": "IPv4", "gatewayIp": "10.77.0.1"})
        assert subnet.status_code == 201, subnet.text
        volumes = []
        for _ in range(3):
            created = api.post("/storage/v1/storages", json={"storageData": {"typeOfStorage": "volume",
                                                                             "sizeOfStorage": 1}})
            assert created.status_code == 201, created.text
            volumes.append(created.json()["storageId"])
        ids = []
        for index in range(2):
            response = api.post("/compute/v1/computes", json={
                "computeFlavourId": "m1.tiny", "computeName": f"guest-{index}", "vcImageId": "test-guest",
                "interfaceData": [{"networkId": network_id}], "storageIds": [volumes[index]]})
            assert response.status_code in (201, 202), response.text
            ids.append(response.json()["computeId"])

        def allocated() -> list[dict] | None:
            bodies = [api.get(f"/compute/v1/computes/{i}").json() for i in ids]
            states = {b["provisioningState"] for b in bodies}
            assert "FAILED" not in states, [b.get("lastOperation") or b.get("error") or b.get("stateReason") for b in bodies]
            return bodies if states == {"ALLOCATED"} else None

        bodies = wait_for(allocated, 3 * BOOT_TIMEOUT)
        assert bodies, "the computes did not reach ALLOCATED"
        assert [b["runningState"] for b in bodies] == ["RUNNING", "RUNNING"]
        assert len(qemu_pids(str(state_dir))) == 2
        addresses = [b["virtualNetworkInterface"][0]["ipAddress"][0] for b in bodies]
        assert all(len(b["virtualDisks"]) == 1 for b in bodies)

        # Both guests answer over the VXLAN network's bridge, from a probe address inside the VIM's
        # namespace (guest-to-guest over the serial console is left to the driver's follow-up).
        bridge = driver._state.networks[network_id].details["bridge"]
        namespace = driver.namespace.name
        subprocess.run(["ip", "-n", namespace, "addr", "add", "10.77.0.250/24", "dev", bridge], check=True)
        for compute_id, address in zip(ids, addresses):
            answer = subprocess.run(["ip", "netns", "exec", namespace, "wget", "-q", "-T", "5", "-O", "-",
                                     f"http://{address}/"], capture_output=True, text=True, timeout=30)
            assert answer.stdout.strip() == f"vimkit-guest {compute_id}", answer.stderr

        # A disk hot-plugged into guest 0: its QEMU process opens the volume's file.
        updated = api.patch(f"/compute/v1/computes/{ids[0]}", headers=MERGE,
                            json={"virtualDiskAttach": [volumes[2]]})
        assert updated.status_code in (200, 202), updated.text
        assert wait_for(lambda: len(api.get(f"/compute/v1/computes/{ids[0]}").json()["virtualDisks"]) == 2, 60)
        pid = driver._vms[ids[0]].record.pid
        assert wait_for(lambda: any(os.readlink(fd).endswith(f"{volumes[2]}.qcow2")
                                    for fd in Path(f"/proc/{pid}/fd").iterdir()), 10)

        for compute_id in ids:
            assert api.delete(f"/compute/v1/computes/{compute_id}").status_code in (200, 202, 204)
        assert wait_for(lambda: all(api.get(f"/compute/v1/computes/{i}").status_code == 404 for i in ids), 120)
        for storage_id in volumes:
            assert api.delete(f"/storage/v1/storages/{storage_id}").status_code in (200, 202, 204)
        subnet_id = subnet.json()["resourceId"]
        assert api.delete(f"/network/v1/subnets/{subnet_id}").status_code in (200, 202, 204)
        deleted = api.delete(f"/network/v1/networks/{network_id}")
        assert deleted.status_code in (200, 202, 204), deleted.text

    assert qemu_pids(str(state_dir)) == []
    assert not list(state_dir.rglob("*.qcow2"))
    assert not (state_dir / "vms").exists() or not list((state_dir / "vms").iterdir())
    links = list(asyncio.run(driver.namespace.links()))
    assert not [name for name in links if name.startswith(("tp-", "br-", "vx-"))], links

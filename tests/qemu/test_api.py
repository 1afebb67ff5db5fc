"""Real VMs through the HTTP API (the issue's test list): two computes on one VXLAN network with a
volume each — one from the registered test guest with a large userData on its config drive, one
from a registered disk image booted with the test guest's kernel — reached from the namespace and
from each other; a disk and a NIC (on a second network) hot-plugged, the NIC removed again; a
volume grown online; pause/resume, stop/start; a QEMU process killed → CRASHED, an alarm and its
notification; offline migration refused on one host; then nothing left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, assert_problem, start_server
from tests.qemu.conftest import BOOT_TIMEOUT, kill_leftovers, qemu_pids
from tests.receivers import Receiver
from vimkit.drivers.qemu import local_inventory_toml
from vimkit.drivers.qemu.host import tap_name
from vimkit.drivers.qemu.vm import disk_serial

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
                          qemu_stop_timeout=2.0, qemu_max_concurrent_boots=2, notify_poll_interval=0.1,
                          notify_backoff_base=0.05, notify_backoff_cap=0.3)
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


def serial_line(path: Path, command: str, found: Callable[[str], bool], timeout: float = 30.0) -> str:
    """Run ``command`` on a guest's serial console shell; the first output line ``found`` accepts."""
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
            # The command is echoed: answers are looked for on whole lines of their own (the last
            # line may still be arriving).
            for line in seen.decode(errors="replace").split("\n")[:-1]:
                if found(line.strip()):
                    return line.strip()
        raise AssertionError(f"no answer to {command!r} on the console: {seen.decode(errors='replace')[-500:]}")


def serial_command(path: Path, command: str, expect: str, timeout: float = 30.0) -> str:
    """Run ``command`` on a guest's serial console shell and wait for ``expect`` on a line of its own."""
    return serial_line(path, command, lambda line: line == expect, timeout)


def guest_disk_sectors(console: Path, volume_id: str, timeout: float = 30.0) -> int | None:
    """The size in sectors of the guest's disk whose serial is the volume's; None while it has none.

    The answer carries a token of its own: the guest may still be sending the last line of an
    earlier command (its "none" line) when the next one connects, and that line, taken for this
    command's answer, once made a disk that was there look missing."""
    token = uuid.uuid4().hex[:8]
    # SEC""TORS: the echoed command line never reads as an answer.
    marker = f"SECTORS-{token}="
    echo = f'echo SEC""TORS-{token}='
    line = serial_line(console, f'for d in /sys/block/vd*; do [ "$(cat $d/serial)" = "{disk_serial(volume_id)}" ] '
                                f'&& {echo}$(cat $d/size); done; {echo}',
                       lambda line: line.startswith(marker), timeout)
    return int(line.removeprefix(marker)) if line != marker else None


def ns_get(namespace: str, url: str, timeout: int = 5) -> subprocess.CompletedProcess:
    """An HTTP GET from inside the VIM's namespace (never from the root namespace)."""
    return subprocess.run(["ip", "netns", "exec", namespace, "wget", "-q", "-t", "1", "-T", str(timeout), "-O", "-",
                           url], capture_output=True, text=True, timeout=timeout + 25)


def test_real_vms_through_the_api(qvim: RunningServer, tmp_path: Path) -> None:
    driver = qvim.services.infrastructure.driver
    state_dir = driver.config.state_dir
    namespace = driver.namespace.name
    receiver = Receiver().start()
    api = qvim.new_consumer().client()
    admin = qvim.client()
    try:
        assert api.post("/faults/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
        networks, subnets = [], []
        for name, cidr in (("lan", "10.77.0.0/24"), ("extra", "10.78.0.0/24")):
            network = api.post("/network/v1/networks", json={"networkResourceName": name, "networkType": "vxlan"})
            assert network.status_code == 201, network.text
            networks.append(network.json()["networkResourceId"])
            subnet = api.post("/network/v1/subnets", json={"networkId": networks[-1], "cidr": cidr,
                                                           "ipVersion": "IPv4", "gatewayIp": cidr.replace("0/24", "1")})
            assert subnet.status_code == 201, subnet.text
            subnets.append(subnet.json()["resourceId"])
        volumes = []
        for _ in range(3):
            created = api.post("/storage/v1/storages", json={"storageData": {"typeOfStorage": "volume",
                                                                             "sizeOfStorage": 1}})
            assert created.status_code == 201, created.text
            volumes.append(created.json()["storageId"])

        # The seeded test guest is an image; a disk image booted with its kernel is registered.
        assert admin.get("/admin/v1/images/test-guest").json()["kind"] == "KERNEL_INITRD"
        disk = tmp_path / "disk.raw"
        disk.write_bytes(b"VIMKIT-DISK-IMG1" + bytes((1 << 20) - 16))
        registered = admin.post("/admin/v1/images", json={"name": "disk", "imageId": "disk-1", "kind": "DISK",
                                                          "diskPath": str(disk), "kernelImageId": "test-guest",
                                                          "isPublic": True})
        assert registered.status_code == 201, registered.text

        user_data = "".join(f"#{i:05d} vimkit config drive user data\n" for i in range(1700))  # ≈ 60 KB
        ids = []
        for index, image in enumerate(("test-guest", "disk-1")):
            response = api.post("/compute/v1/computes", json={
                "computeFlavourId": "m1.tiny", "computeName": f"guest-{index}", "vcImageId": image,
                "interfaceData": [{"networkId": networks[0]}], "storageIds": [volumes[index]],
                "metadata": {"role": f"r{index}"}, **({"userData": {"content": user_data}} if index == 0 else {})})
            assert response.status_code in (201, 202), response.text
            ids.append(response.json()["computeId"])

        def body(compute_id: str) -> dict:
            return api.get(f"/compute/v1/computes/{compute_id}").json()

        def allocated() -> list[dict] | None:
            bodies = [body(i) for i in ids]
            states = {b["provisioningState"] for b in bodies}
            assert "FAILED" not in states, [b.get("lastOperation") or b.get("error") or b.get("stateReason") for b in bodies]
            return bodies if states == {"ALLOCATED"} else None

        bodies = wait_for(allocated, 3 * BOOT_TIMEOUT)
        assert bodies, "the computes did not reach ALLOCATED"
        assert [b["runningState"] for b in bodies] == ["RUNNING", "RUNNING"]
        assert len(qemu_pids(str(state_dir))) == 2
        addresses = [b["virtualNetworkInterface"][0]["ipAddress"][0] for b in bodies]
        assert all(len(b["virtualDisks"]) == 1 for b in bodies)
        assert driver._vms[ids[1]].record.root_backing == str(disk)

        # Both guests answer over the VXLAN network's bridge, from a probe address inside the VIM's namespace.
        bridges = [driver._state.networks[n].details["bridge"] for n in networks]
        subprocess.run(["ip", "-n", namespace, "addr", "add", "10.77.0.250/24", "dev", bridges[0]], check=True)
        subprocess.run(["ip", "-n", namespace, "addr", "add", "10.78.0.250/24", "dev", bridges[1]], check=True)
        for compute_id, address in zip(ids, addresses):
            answer = ns_get(namespace, f"http://{address}/")
            assert answer.stdout.strip() == f"vimkit-guest {compute_id}", answer.stderr
        # The config drive: 60 KB of userData and the metadata reached guest 0 unchanged.
        assert ns_get(namespace, f"http://{addresses[0]}/userdata").stdout == user_data
        meta = ns_get(namespace, f"http://{addresses[0]}/meta_data.json").stdout
        assert f'"uuid": "{ids[0]}"' in meta and '"role": "r0"' in meta
        # Guest 1's root disk is the registered disk image (under a qcow2 overlay).
        consoles = [driver._vms[i].serial_path for i in ids]
        serial_command(consoles[1], "echo $(head -c 16 /dev/vda)", "VIMKIT-DISK-IMG1")
        # Guest to guest over the bridge: guest 1 fetches guest 0's page (busybox-static's wget
        # crashes in the name-service code; nc does not).
        serial_command(consoles[1], f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {addresses[0]} 80",
                       f"vimkit-guest {ids[0]}")

        # A disk hot-plugged into guest 0: its QEMU process opens the volume's file.
        updated = api.patch(f"/compute/v1/computes/{ids[0]}", headers=MERGE, json={"virtualDiskAttach": [volumes[2]]})
        assert updated.status_code in (200, 202), updated.text
        assert wait_for(lambda: len(body(ids[0])["virtualDisks"]) == 2, 60)
        pid = driver._vms[ids[0]].record.pid
        assert wait_for(lambda: any(os.readlink(fd).endswith(f"{volumes[2]}.qcow2")
                                    for fd in Path(f"/proc/{pid}/fd").iterdir()), 10)

        # The guest sees the hot-plugged disk, found by its serial as a guest would (the name
        # /dev/vdX follows the guest's probe order, which Linux does not promise).
        assert wait_for(lambda: guest_disk_sectors(consoles[0], volumes[2]) == 1 << 21, 30)

        # Volume 0 grown online: the guest sees 2 GiB on the disk with the volume's serial.
        assert driver._state.volumes[volumes[0]].attachments[0][1] == "/dev/vdc"   # vda root, vdb config drive
        # Given at allocation, it was on QEMU's command line: the guest has had it since boot.
        assert guest_disk_sectors(consoles[0], volumes[0]) == 1 << 21
        grown = api.post(f"/storage/v1/storages/{volumes[0]}/scale", json={"sizeOfStorage": 2},
                         headers={"Prefer": "wait=60"})
        assert grown.status_code in (200, 202), grown.text
        assert wait_for(lambda: api.get(f"/storage/v1/storages/{volumes[0]}").json()["sizeOfStorage"] == 2, 60)
        assert wait_for(lambda: guest_disk_sectors(consoles[0], volumes[0], timeout=5) == 2 << 21, 30)

        # A NIC on the second network added with Update: the guest configures it from the guest
        # channel and answers on that network; removed again, it no longer does.
        updated = api.patch(f"/compute/v1/computes/{ids[0]}", headers=MERGE,
                            json={"networkInterfaceNew": [{"networkId": networks[1]}]})
        assert updated.status_code in (200, 202), updated.text
        nics = wait_for(lambda: [n for n in body(ids[0])["virtualNetworkInterface"] if n["networkId"] == networks[1]], 90)
        assert nics, body(ids[0])
        new_address = nics[0]["ipAddress"][0]
        assert new_address.startswith("10.78.0.")
        answer = wait_for(lambda: ns_get(namespace, f"http://{new_address}/", 3).stdout.strip(), 30)
        assert answer == f"vimkit-guest {ids[0]}"
        tap = tap_name(nics[0]["resourceId"])
        assert tap in asyncio.run(driver.namespace.links())
        removed = api.patch(f"/compute/v1/computes/{ids[0]}", headers=MERGE,
                            json={"networkInterfaceDelete": [nics[0]["resourceId"]]})
        assert removed.status_code in (200, 202), removed.text
        assert wait_for(lambda: len(body(ids[0])["virtualNetworkInterface"]) == 1, 60)
        assert ns_get(namespace, f"http://{new_address}/", 2).returncode != 0
        assert tap not in asyncio.run(driver.namespace.links())

        # Pause / unpause: a paused guest does not answer, an unpaused one does again.
        operate(api, ids[0], "PAUSE", "PAUSED")
        assert ns_get(namespace, f"http://{addresses[0]}/", 2).returncode != 0
        operate(api, ids[0], "UNPAUSE", "RUNNING")
        assert ns_get(namespace, f"http://{addresses[0]}/").stdout.strip() == f"vimkit-guest {ids[0]}"
        # Stop / start: no process while stopped, a new one that boots again (config drive included).
        operate(api, ids[0], "STOP", "STOPPED")
        assert qemu_pids(ids[0]) == []
        operate(api, ids[0], "START", "RUNNING")
        assert len(qemu_pids(ids[0])) == 1
        assert ns_get(namespace, f"http://{addresses[0]}/userdata").stdout == user_data

        # Offline migration on a single host: refused with the reason.
        refused = api.post(f"/compute/v1/computes/{ids[0]}/migrate", json={"migrationType": "OFFLINE_MIGRATION"})
        assert refused.status_code == 409 and "OFFLINE_MIGRATION" in refused.json()["detail"], refused.text

        # A QEMU process killed behind the VIM's back: CRASHED, an alarm and its notification.
        os.kill(driver._vms[ids[1]].record.pid, 9)
        assert wait_for(lambda: body(ids[1])["runningState"] == "CRASHED", 30), body(ids[1])
        alarm = wait_for(lambda: [a for a in api.get("/faults/v1/alarms", params={
            "filter": f"(eq,managedObjectId,{ids[1]})"}).json() if a["perceivedSeverity"] != "CLEARED"], 30)
        assert alarm and alarm[0]["faultType"] == "COMPUTE_CRASH", alarm
        notes = receiver.wait_for(1, 30)
        assert notes[0]["notificationType"] == "AlarmNotification" and notes[0]["alarm"]["managedObjectId"] == ids[1]

        # An image in use cannot be unregistered.
        assert_problem(admin.delete("/admin/v1/images/disk-1"), 409)

        # Terminate everything: no QEMU process, tap, bridge or qcow2 file left.
        for compute_id in ids:
            assert api.delete(f"/compute/v1/computes/{compute_id}").status_code in (200, 202, 204)
        assert wait_for(lambda: all(api.get(f"/compute/v1/computes/{i}").status_code == 404 for i in ids), 120)
        assert admin.delete("/admin/v1/images/disk-1").status_code == 204
        for storage_id in volumes:
            assert api.delete(f"/storage/v1/storages/{storage_id}").status_code in (200, 202, 204)
        for subnet_id in subnets:
            assert api.delete(f"/network/v1/subnets/{subnet_id}").status_code in (200, 202, 204)
        for network_id in networks:
            deleted = api.delete(f"/network/v1/networks/{network_id}")
            assert deleted.status_code in (200, 202, 204), deleted.text
    finally:
        api.close()
        admin.close()
        receiver.stop()

    assert qemu_pids(str(state_dir)) == []
    assert not list(state_dir.rglob("*.qcow2")) and not list(state_dir.rglob("*.iso"))
    assert not (state_dir / "vms").exists() or not list((state_dir / "vms").iterdir())
    links = list(asyncio.run(driver.namespace.links()))
    assert not [name for name in links if name.startswith(("tp-", "br-", "vx-"))], links


def operate(api, compute_id: str, operation: str, state: str) -> None:  # type: ignore[no-untyped-def]
    response = api.post(f"/compute/v1/computes/{compute_id}/operate", json={"computeOperation": operation})
    assert response.status_code in (200, 202), f"{operation}: {response.text}"

    def reached() -> bool:
        current = api.get(f"/compute/v1/computes/{compute_id}").json()
        assert current["provisioningState"] != "FAILED", current
        return current["runningState"] == state and current["provisioningState"] == "ALLOCATED"

    assert wait_for(reached, 2 * BOOT_TIMEOUT), f"{operation}: not {state}"

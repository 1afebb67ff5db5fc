"""The QEMU driver against real VMs (TCG): boot, the running-state machine, crash, cleanup."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest

from tests.qemu.conftest import qemu_pids, run_driver
from tests.qemu.test_api import serial_command
from vimkit.drivers.base import (
    ComputeResources,
    ComputeSpec,
    DriverError,
    EventKind,
    FixedIp,
    MetricName,
    NetworkSpec,
    NicSpec,
    PortSpec,
    RunningState,
    Segmentation,
    SubnetSpec,
    VolumeSpec,
)

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(600)]

R = RunningState
HOST = "local-host"


def spec(compute_id: str, nics: tuple[NicSpec, ...] = (), memory_mb: int = 128) -> ComputeSpec:
    return ComputeSpec(compute_id=compute_id, name=compute_id, host_id=HOST, zone_id="local", vcpus=1,
                       memory_mb=memory_mb, disk_gb=1, nics=nics)


async def network_with_ports(driver, addresses: list[str]) -> list[NicSpec]:
    seg = Segmentation("vxlan", 10042, None, 1450)
    await driver.create_network(NetworkSpec("net-1", "net-1", seg))
    await driver.create_subnet(SubnetSpec("sub-1", "net-1", "10.42.0.0/24", gateway_ip="10.42.0.1"))
    nics = []
    for index, address in enumerate(addresses):
        mac = f"52:54:00:42:00:{index + 10:02x}"
        fixed = (FixedIp("sub-1", address),)
        await driver.create_port(PortSpec(f"port-{index}", "net-1", mac, fixed))
        nics.append(NicSpec(f"port-{index}", "net-1", mac, fixed, seg))
    return nics


async def ns_http(driver, url: str) -> str:
    """An HTTP GET from inside the VIM's namespace (never from the root namespace)."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", driver.namespace.name, "wget", "-q", "-T", "5", "-O", "-", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def test_lifecycle_and_cleanup(tmp_path: Path, guest_dir: Path) -> None:
    state_dir = tmp_path / "qemu"

    async def scenario(driver) -> None:
        nics = await network_with_ports(driver, ["10.42.0.11"])
        info = await driver.create_compute(spec("vm-1", tuple(nics)))
        assert info.running_state is R.RUNNING
        pid = info.details["pid"]
        assert qemu_pids("vm-1") == [pid]
        assert "VIMKIT-READY vm-1" in (state_dir / "vms" / "vm-1" / "serial.log").read_text()
        # The namespace reaches the guest's HTTP responder over the bridge (a probe address on
        # the bridge, inside the VIM's namespace).
        await driver.namespace.ip("addr", "add", "10.42.0.250/24", "dev",
                                  driver._state.networks["net-1"].details["bridge"])
        assert (await ns_http(driver, "http://10.42.0.11/")).strip() == "vimkit-guest vm-1"

        assert (await driver.pause_compute("vm-1")).running_state is R.PAUSED
        status = await driver._vms["vm-1"].execute("query-status")
        assert status["status"] == "paused"
        assert (await driver.unpause_compute("vm-1")).running_state is R.RUNNING
        assert (await driver.suspend_compute("vm-1")).running_state is R.SUSPENDED
        assert (await driver.resume_compute("vm-1")).running_state is R.RUNNING
        with pytest.raises(DriverError):
            await driver.unpause_compute("vm-1")  # not paused: CONFLICT

        samples = await driver.sample_metrics(["vm-1"])
        metrics = {s.metric for s in samples}
        assert {MetricName.CPU_UTILISATION, MetricName.MEMORY_UTILISATION, MetricName.NET_RX_BYTES} <= metrics
        rx = [s.value for s in samples if s.metric is MetricName.NET_RX_BYTES]
        assert rx and rx[0] > 0  # the HTTP exchange above

        stopped = await driver.stop_compute("vm-1")
        assert stopped.running_state is R.STOPPED and qemu_pids("vm-1") == []
        started = await driver.start_compute("vm-1")
        assert started.running_state is R.RUNNING and started.details["epoch"] == 2
        rebooted = await driver.reboot_compute("vm-1")
        assert rebooted.running_state is R.RUNNING and rebooted.details["pid"] == started.details["pid"]
        resized = await driver.resize_compute("vm-1", ComputeResources(2, 192, 2))
        assert (resized.vcpus, resized.memory_mb, resized.running_state) == (2, 192, R.RUNNING)
        assert "-smp" in (state_dir / "vms" / "vm-1" / "qemu.log").read_text()

        # A compute snapshot as the image of a new compute: its root disk is a copy of the snapshot.
        serial = driver._vms["vm-1"].serial_path
        await asyncio.to_thread(serial_command, serial, "echo VIMKIT-SNAP > /dev/vda; sync; echo written", "written")
        await driver.snapshot_compute("vm-1", "snap-1")
        copy = await driver.create_compute(dataclasses.replace(spec("vm-1b"), image_ref="snap-1"))
        assert copy.running_state is R.RUNNING
        await asyncio.to_thread(serial_command, driver._vms["vm-1b"].serial_path, "echo $(head -c 11 /dev/vda)",
                                "VIMKIT-SNAP")
        await driver.delete_compute("vm-1b")
        await driver.delete_compute_snapshot("snap-1")

        await driver.delete_compute("vm-1")
        assert qemu_pids("vm-1") == []
        assert not (state_dir / "vms" / "vm-1").exists()
        links = await driver.namespace.links()
        assert not [name for name in links if name.startswith("tp-")]
        await driver.delete_port("port-0")
        await driver.delete_network("net-1")
        assert not [name for name in await driver.namespace.links() if name.startswith(("br-", "vx-"))]

    run_driver(state_dir, guest_dir, scenario)
    assert not qemu_pids(str(state_dir))


def test_crash_event_and_volumes(tmp_path: Path, guest_dir: Path) -> None:
    state_dir = tmp_path / "qemu"

    async def scenario(driver) -> None:
        events = driver.events()
        await driver.create_volume(VolumeSpec("vol-1", "vol-1", 1, "local-pool", "local"))
        await driver.create_compute(spec("vm-2"))
        attachment = await driver.attach_volume("vol-1", "vm-2")
        assert attachment.device == "/dev/vdc"   # vdb is the config drive
        vm = driver._vms["vm-2"]
        blocks = await vm.execute("query-block")
        assert any(b.get("inserted", {}).get("node-name") == "vvol1" for b in blocks)
        assert await vm.execute("qom-get", {"path": "/machine/peripheral/dev-vvol1", "property": "serial"}) == "vol-1"
        await driver.extend_volume("vol-1", 2)
        nodes = await vm.execute("query-named-block-nodes")
        assert [n["image"]["virtual-size"] for n in nodes if n["node-name"] == "vvol1"] == [2 << 30]
        snapshot = await driver.snapshot_volume("vol-1", "snap-1")
        assert snapshot.source_id == "vol-1"
        await driver.delete_volume_snapshot("snap-1")
        await driver.detach_volume("vol-1", "vm-2")
        assert not any(b.get("inserted", {}).get("node-name") == "vvol1" for b in await vm.execute("query-block"))

        os.kill(vm.record.pid, signal.SIGKILL)
        event = await asyncio.wait_for(anext(events), 10)
        assert (event.kind, event.object_id) == (EventKind.COMPUTE_CRASHED, "vm-2")
        assert (await driver.get_compute("vm-2")).running_state is R.CRASHED
        assert (await driver.start_compute("vm-2")).running_state is R.RUNNING
        await driver.delete_compute("vm-2")
        await driver.delete_volume("vol-1")
        assert not list((state_dir / "pools").rglob("*.qcow2"))

    run_driver(state_dir, guest_dir, scenario)
    assert not qemu_pids(str(state_dir))


def test_reconnect_after_restart(tmp_path: Path, guest_dir: Path) -> None:
    """A new driver on the same state directory re-attaches to a running VM and reports one that
    died in between as crashed."""
    state_dir = tmp_path / "qemu"

    async def scenario(driver) -> None:
        from vimkit.drivers.qemu import QemuDriver

        await asyncio.gather(driver.create_compute(spec("vm-a")), driver.create_compute(spec("vm-b")))
        await driver.pause_compute("vm-a")
        victim = driver._vms["vm-b"].record.pid
        await driver.close()
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.5)
        second = QemuDriver(driver.config)
        try:
            await second.start()
            events = second.events()
            event = await asyncio.wait_for(anext(events), 5)
            assert (event.kind, event.object_id) == (EventKind.COMPUTE_CRASHED, "vm-b")
            assert (await second.get_compute("vm-a")).running_state is R.PAUSED
            assert (await second.unpause_compute("vm-a")).running_state is R.RUNNING
            assert (await second.get_compute("vm-b")).running_state is R.CRASHED
        finally:
            await second.destroy_all()
            await second.close()

    run_driver(state_dir, guest_dir, scenario)
    assert not qemu_pids(str(state_dir))

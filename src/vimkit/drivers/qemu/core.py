"""The QEMU backend's shared machinery: state, locks, wiring, the crash watchdog, reconnection."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vimkit.drivers.base import (
    AttachmentInfo,
    ComputeInfo,
    DriverError,
    DriverErrorCode,
    DriverEvent,
    EventHub,
    EventKind,
    LinkState,
    NicInfo,
    ObjectType,
    PortInfo,
    RunningState,
    VolumeInfo,
    VolumeState,
)
from vimkit.drivers.qemu.config import LOCAL_HOST_ID, QemuConfig, resolve_accel
from vimkit.drivers.qemu.host import Namespace, run, tap_name
from vimkit.drivers.qemu.state import PortRecord, QemuState, VmRecord, VolumeRecord
from vimkit.drivers.qemu.vm import DiskWiring, NicWiring, Vm
from vimkit.infra.inventory import Inventory

log = logging.getLogger("vimkit.drivers.qemu")
R = RunningState
#: States in which a QEMU process should exist; its disappearance there is a crash.
LIVE = (R.RUNNING.value, R.PAUSED.value, R.SUSPENDED.value, R.REBOOTING.value, R.STARTING.value)
MAX_USER_DATA = 1024   # bytes of base64 on the kernel command line (x86 allows 2048 in all)


def _err(code: DriverErrorCode, message: str, retryable: bool = False) -> DriverError:
    return DriverError(code, message, retryable)


class QemuCore:
    def __init__(self, config: QemuConfig, inventory: Inventory | None = None) -> None:
        self.config = config
        self.inventory = inventory
        # Every inventory host is this machine: a single-host backend given a larger inventory
        # still works, it just over-reports capacity (docs/qemu.md recommends the local inventory).
        self._hosts = ({h.hostId: h.zoneId for h in inventory.hosts} if inventory is not None
                       else {LOCAL_HOST_ID: "local"})
        self._pools = {p.poolId for p in inventory.storagePools} if inventory is not None else {"local-pool"}
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.accel = resolve_accel(config.accel)
        self.namespace = Namespace(config.netns)
        self._state = QemuState.load(config.state_dir)
        self._hub = EventHub(config.event_queue)
        self._vms: dict[str, Vm] = {rec.compute_id: self._new_vm(rec) for rec in self._state.vms.values()}
        self._locks: dict[str, asyncio.Lock] = {}
        self._boot_slots: asyncio.Semaphore | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._pending_events: list[DriverEvent] = []
        self._cpu_prev: dict[str, tuple[int, float, float]] = {}   # pid, when, CPU seconds

    def _new_vm(self, record: VmRecord) -> Vm:
        return Vm(record, self.config, self.namespace, self.accel)

    # ------------------------------------------------------------------ plumbing

    def _save(self) -> None:
        self._state.save(self.config.state_dir)

    def _lock(self, object_id: str) -> asyncio.Lock:
        lock = self._locks.get(object_id)
        if lock is None:
            lock = self._locks[object_id] = asyncio.Lock()
        return lock

    def _slots(self) -> asyncio.Semaphore:
        if self._boot_slots is None:
            self._boot_slots = asyncio.Semaphore(self.config.boot_slots)
        return self._boot_slots

    def _emit(self, kind: EventKind, object_type: ObjectType, object_id: str, details: Mapping[str, Any]) -> None:
        event = DriverEvent(uuid.uuid4().hex, kind, object_type, object_id, datetime.now(timezone.utc), dict(details))
        if self._hub.subscribers:
            self._hub.publish(event)
        else:
            # Found while nobody listens (a VM that died while the VIM was down is found in
            # start(), before the VIM subscribes): kept for the first subscriber.
            self._pending_events.append(event)

    def _vm(self, compute_id: str) -> Vm:
        vm = self._vms.get(compute_id)
        if vm is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"compute {compute_id} does not exist")
        return vm

    def _volume(self, volume_id: str) -> VolumeRecord:
        volume = self._state.volumes.get(volume_id)
        if volume is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"volume {volume_id} does not exist")
        return volume

    def _port(self, port_id: str) -> PortRecord:
        port = self._state.ports.get(port_id)
        if port is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"port {port_id} does not exist")
        return port

    def _pool_dir(self, pool_id: str) -> Path:
        path = self.config.state_dir / "pools" / pool_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _transition(vm: Vm, allowed: tuple[RunningState, ...], operation: str) -> None:
        if vm.record.state not in {s.value for s in allowed}:
            raise _err(DriverErrorCode.CONFLICT,
                       f"cannot {operation} compute {vm.compute_id} in state {vm.record.state}")

    # ------------------------------------------------------------------ views

    def _info(self, vm: Vm) -> ComputeInfo:
        r = vm.record
        nics = tuple(NicInfo(p, self._state.ports[p].device or "", LinkState.UP)
                     for p in r.ports if p in self._state.ports)
        attachments = tuple(AttachmentInfo(v, r.compute_id, d) for v, d in r.volumes)
        return ComputeInfo(r.compute_id, r.host_id, RunningState(r.state), r.vcpus, r.memory_mb, r.disk_gb, nics,
                           attachments, backend_ref=f"qemu-{r.pid}" if r.pid else None,
                           details={"epoch": r.epoch, "pid": r.pid, "accel": self.accel, "namespace": self.namespace.name,
                                    "qmp": str(vm.qmp_path), "serial": str(vm.serial_path),
                                    "bootSeconds": r.boot_seconds})

    def _volume_info(self, volume: VolumeRecord) -> VolumeInfo:
        state = VolumeState.IN_USE if volume.attachments else VolumeState.AVAILABLE
        if not Path(volume.path).exists():
            state = VolumeState.FAILED
        return VolumeInfo(volume.volume_id, volume.pool_id, volume.size_gb, state,
                          tuple(AttachmentInfo(volume.volume_id, c, d) for c, d in volume.attachments),
                          backend_ref=volume.path)

    def _port_info(self, port: PortRecord) -> PortInfo:
        return PortInfo(port.port_id, port.network_id, port.mac_address, port.compute_id, LinkState.UP,
                        backend_ref=tap_name(port.port_id) if port.compute_id else None)

    # ------------------------------------------------------------------ wiring

    def _nic_wiring(self, port: PortRecord) -> NicWiring:
        """The tap and what the guest's init needs to configure the NIC from the VIM's IPAM."""
        parts = [port.mac_address.lower()]
        for subnet_id, address in port.fixed_ips:
            subnet = self._state.subnets.get(subnet_id)
            if subnet is None or ipaddress.ip_address(address).version != 4:
                continue
            prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
            parts.append(f"{address}/{prefix}")
            if subnet.gateway_ip:
                parts.append(subnet.gateway_ip)
            break  # the test guest configures one IPv4 address per NIC
        return NicWiring(port.port_id, tap_name(port.port_id), port.mac_address.lower(), ",".join(parts))

    def _disk_wiring(self, record: VmRecord) -> list[DiskWiring]:
        return [DiskWiring(volume_id, self._state.volumes[volume_id].path)
                for volume_id, _device in record.volumes if volume_id in self._state.volumes]

    async def _ensure_taps(self, record: VmRecord) -> list[NicWiring]:
        wiring = []
        for port_id in record.ports:
            port = self._state.ports[port_id]
            network = self._state.networks[port.network_id]
            await self.namespace.add_tap(port_id, port.network_id, network.mtu)
            wiring.append(self._nic_wiring(port))
        return wiring

    def _guest_files(self, image_ref: str | None) -> tuple[str, str]:
        """An image id naming a directory under the guest directory selects that kernel+initramfs
        pair; any other id (vimkit has no image service yet) boots the default test guest."""
        base = self.config.guest_dir
        candidates = ([base / image_ref] if image_ref and "/" not in image_ref and image_ref not in (".", "..") else [])
        for directory in [*candidates, base]:
            kernel, initrd = directory / "vmlinuz", directory / "initramfs.img"
            if kernel.is_file() and initrd.is_file():
                return str(kernel), str(initrd)
        raise _err(DriverErrorCode.BACKEND_UNAVAILABLE,
                   f"no guest in {base} (build one with scripts/build-test-guest.sh {base})")

    @staticmethod
    def _encode_user_data(content: str | None) -> str:
        if not content:
            return ""
        encoded = base64.b64encode(content.encode()).decode()
        if len(encoded) > MAX_USER_DATA:
            raise _err(DriverErrorCode.INVALID_INPUT,
                       f"userData is {len(encoded)} bytes in base64; the QEMU backend passes at most "
                       f"{MAX_USER_DATA} on the kernel command line")
        return encoded

    async def _boot(self, vm: Vm) -> None:
        """Launch the process and wait for the ready marker, one of ``boot_slots`` boots at a time."""
        nics = await self._ensure_taps(vm.record)
        async with self._slots():
            offset = 0
            vm.serial_log.unlink(missing_ok=True)  # a new process: only its own marker counts
            started = time.monotonic()
            await vm.launch(nics, self._disk_wiring(vm.record))
            self._save()  # the pid, so a crash of the VIM now leaves a VM it can find again
            await vm.wait_ready(offset, self.config.boot_timeout)
            vm.record.boot_seconds = round(time.monotonic() - started, 3)

    def _attach_record(self, volume: VolumeRecord, record: VmRecord) -> str:
        used = {device for _volume, device in record.volumes}
        # vda is the root disk the VM is created with.
        device = next(f"/dev/vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"/dev/vd{c}" not in used)
        record.volumes.append([volume.volume_id, device])
        volume.attachments.append([record.compute_id, device])
        return device

    async def _internal_snapshot(self, vm: Vm | None, node: str, path: str, name: str) -> None:
        if vm is not None:
            await vm.execute("blockdev-snapshot-internal-sync", {"device": node, "name": name})
        else:
            await run(self.config.qemu_img, "snapshot", "-c", name, path)

    async def _delete_internal_snapshot(self, vm: Vm | None, node: str, path: str, name: str) -> None:
        try:
            if vm is not None:
                await vm.execute("blockdev-snapshot-delete-internal-sync", {"device": node, "name": name})
            elif os.path.exists(path):
                await run(self.config.qemu_img, "snapshot", "-d", name, path)
        except Exception:  # noqa: BLE001 - the disk (and its snapshots) may be gone with its compute
            pass

    # ------------------------------------------------------------------ liveness

    def _check_liveness(self) -> None:
        for compute_id, vm in list(self._vms.items()):
            if vm.record.state not in LIVE or vm.expect_exit or self._lock(compute_id).locked():
                continue
            if not vm.alive():
                self._crashed(vm, "the QEMU process exited unexpectedly")

    def _crashed(self, vm: Vm, reason: str) -> None:
        log.warning("compute %s crashed: %s", vm.compute_id, reason)
        vm.record.state = R.CRASHED.value
        vm.record.pid = None
        vm.qmp = None
        self._save()
        self._emit(EventKind.COMPUTE_CRASHED, ObjectType.COMPUTE, vm.compute_id,
                   {"reason": reason, "hostId": vm.record.host_id, "runningState": R.CRASHED.value})

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval)
            try:
                self._check_liveness()
            except Exception:  # noqa: BLE001 - the watchdog must outlive one bad check
                log.exception("QEMU liveness check failed")

    async def _reconnect(self) -> None:
        """Rebuild what the host lost (the namespace does not survive a host reboot), re-attach to
        the VMs still running and report those that died while the VIM was down."""
        await self.namespace.ensure()
        for network in self._state.networks.values():
            await self.namespace.add_network(network.network_id, network.network_type, network.segmentation_id,
                                             network.physical_network, network.mtu)
        for vm in self._vms.values():
            record = vm.record
            for port_id in record.ports:
                port = self._state.ports.get(port_id)
                if port is not None and port.network_id in self._state.networks:
                    await self.namespace.add_tap(port_id, port.network_id,
                                                 self._state.networks[port.network_id].mtu)
            if record.state not in LIVE:
                continue
            if not vm.alive():
                self._crashed(vm, "the QEMU process ended while the VIM was down")
                continue
            try:
                await vm.connect()
                status = (await vm.execute("query-status")).get("status")
                if status == "paused" and record.state == R.RUNNING.value:
                    record.state = R.PAUSED.value
                elif status == "running" and record.state in (R.STARTING.value, R.REBOOTING.value):
                    record.state = R.RUNNING.value
            except DriverError as exc:
                log.warning("cannot re-attach to compute %s: %s", vm.compute_id, exc.message)
        self._save()

"""Computes as QEMU processes: create, the running-state machine, resize, snapshots, delete.

Suspend is a paused vCPU set recorded as SUSPENDED (the guest's memory stays in the QEMU
process): the VIM's state machine is honoured, but the host's memory is not given back as a
save-to-disk would. Migration between hosts does not exist on a single-host backend.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone

from vimkit.drivers.base import (
    ComputeInfo,
    ComputeResources,
    ComputeSpec,
    DriverError,
    DriverErrorCode,
    HostStatus,
    SnapshotInfo,
)
from vimkit.drivers.qemu.core import QemuCore, R, _err
from vimkit.drivers.qemu.host import run
from vimkit.drivers.qemu.state import SnapshotRecord, VmRecord
from vimkit.drivers.qemu.vm import Vm


class ComputeOps(QemuCore):
    async def list_hosts(self) -> list[HostStatus]:
        up = self.namespace.exists()
        return [HostStatus(host_id, up, {"zoneId": zone_id, "accel": self.accel, "namespace": self.namespace.name})
                for host_id, zone_id in self._hosts.items()]

    async def create_compute(self, spec: ComputeSpec) -> ComputeInfo:
        if spec.compute_id in self._vms:
            raise _err(DriverErrorCode.CONFLICT, f"compute {spec.compute_id} already exists")
        if spec.host_id not in self._hosts:
            raise _err(DriverErrorCode.INVALID_INPUT, f"host {spec.host_id} is not in the inventory")
        for nic in spec.nics:
            port = self._port(nic.port_id)
            if port.network_id != nic.network_id:
                raise _err(DriverErrorCode.INVALID_INPUT, f"port {port.port_id} is on network {port.network_id}")
            if port.compute_id is not None:
                raise _err(DriverErrorCode.CONFLICT, f"port {port.port_id} is plugged into {port.compute_id}")
        for attachment in spec.volumes:
            volume = self._volume(attachment.volume_id)
            if volume.attachments:
                raise _err(DriverErrorCode.CONFLICT, f"volume {volume.volume_id} is attached to another compute")
        entered = time.time()
        source = await self._boot_source(spec.image_ref)
        record = VmRecord(spec.compute_id, spec.name, spec.host_id, spec.vcpus, spec.memory_mb, spec.disk_gb,
                          R.STARTING.value, spec.image_ref,
                          user_data=self._encode_user_data(spec.user_data.content if spec.user_data else None),
                          metadata=dict(spec.metadata), marks={"entered": entered}, **source)
        vm = self._new_vm(record)
        async with self._lock(spec.compute_id):
            self._state.vms[spec.compute_id] = record
            self._vms[spec.compute_id] = vm
            for index, nic in enumerate(spec.nics):
                port = self._state.ports[nic.port_id]
                port.compute_id, port.device = spec.compute_id, f"eth{index}"
                record.ports.append(port.port_id)
            for attachment in spec.volumes:
                self._attach_record(self._state.volumes[attachment.volume_id], record)
            self._save()
            try:
                await self._boot(vm)
            except BaseException:
                await self._destroy(vm)
                raise
            record.state = R.RUNNING.value
            record.marks["returned"] = time.time()
            self._save()
            return self._info(vm)

    async def _destroy(self, vm: Vm) -> None:
        """Kill the process and remove every file and tap of the compute; ports and volumes stay
        (they are the VIM's), unplugged and detached."""
        await vm.kill()
        record = vm.record
        for port_id in record.ports:
            port = self._state.ports.get(port_id)
            if port is not None:
                port.compute_id = port.device = None
                port.tap_epoch += 1
            await self.namespace.remove_tap(port_id)
        for volume_id, _device in record.volumes:
            volume = self._state.volumes.get(volume_id)
            if volume is not None:
                volume.attachments = [a for a in volume.attachments if a[0] != record.compute_id]
        shutil.rmtree(vm.dir, ignore_errors=True)
        self._state.vms.pop(record.compute_id, None)
        self._vms.pop(record.compute_id, None)
        self._cpu_prev.pop(record.compute_id, None)
        self._save()

    async def delete_compute(self, compute_id: str) -> None:
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            await self._destroy(vm)
        self._locks.pop(compute_id, None)

    async def get_compute(self, compute_id: str) -> ComputeInfo:
        return self._info(self._vm(compute_id))

    async def list_computes(self) -> list[ComputeInfo]:
        return [self._info(vm) for vm in self._vms.values()]

    async def start_compute(self, compute_id: str) -> ComputeInfo:
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            self._transition(vm, (R.STOPPED, R.CRASHED), "start")
            await self._restart(vm)
            return self._info(vm)

    async def _restart(self, vm: Vm) -> None:
        """A new process for a stopped or crashed compute (killing any remains first)."""
        await vm.kill()
        vm.record.state = R.STARTING.value
        vm.record.marks = {}
        try:
            await self._boot(vm)
        except DriverError:
            await vm.kill()
            vm.record.state = R.STOPPED.value
            self._save()
            raise
        vm.record.state = R.RUNNING.value
        self._save()

    async def stop_compute(self, compute_id: str) -> ComputeInfo:
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            self._transition(vm, (R.RUNNING, R.PAUSED, R.SUSPENDED, R.CRASHED), "stop")
            running = vm.record.state == R.RUNNING.value
            await vm.shutdown(self.config.stop_timeout if running else 0)
            vm.record.state = R.STOPPED.value
            self._save()
            return self._info(vm)

    async def _qmp_transition(self, compute_id: str, allowed: tuple, operation: str, command: str,
                              new_state: R) -> ComputeInfo:
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            self._transition(vm, allowed, operation)
            await vm.execute(command)
            vm.record.state = new_state.value
            self._save()
            return self._info(vm)

    async def pause_compute(self, compute_id: str) -> ComputeInfo:
        return await self._qmp_transition(compute_id, (R.RUNNING,), "pause", "stop", R.PAUSED)

    async def unpause_compute(self, compute_id: str) -> ComputeInfo:
        return await self._qmp_transition(compute_id, (R.PAUSED,), "unpause", "cont", R.RUNNING)

    async def suspend_compute(self, compute_id: str) -> ComputeInfo:
        return await self._qmp_transition(compute_id, (R.RUNNING, R.PAUSED), "suspend", "stop", R.SUSPENDED)

    async def resume_compute(self, compute_id: str) -> ComputeInfo:
        return await self._qmp_transition(compute_id, (R.SUSPENDED,), "resume", "cont", R.RUNNING)

    async def reboot_compute(self, compute_id: str, hard: bool = False) -> ComputeInfo:
        """``system_reset`` (the guest has no graceful reboot path over QMP), then the ready marker
        again; a hard reboot of a crashed compute starts a new process."""
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            self._transition(vm, (R.RUNNING, R.PAUSED, R.CRASHED) if hard else (R.RUNNING,), "reboot")
            if vm.record.state == R.CRASHED.value or not vm.alive():
                await self._restart(vm)
                return self._info(vm)
            offset = vm.log_size()
            vm.record.state = R.REBOOTING.value
            await vm.execute("system_reset")
            status = (await vm.execute("query-status")).get("status")
            if status == "paused":
                await vm.execute("cont")
            try:
                if vm.record.kernel:
                    await vm.wait_ready(offset, self.config.boot_timeout)
                    await self._configure_hotplugged(vm)
            finally:
                vm.record.state = R.RUNNING.value if vm.alive() else R.CRASHED.value
                self._save()
            return self._info(vm)

    async def resize_compute(self, compute_id: str, resources: ComputeResources) -> ComputeInfo:
        """Offline: the process is replaced by one with the new size (the root disk grows)."""
        vm = self._vm(compute_id)
        async with self._lock(compute_id):
            self._transition(vm, (R.RUNNING, R.STOPPED, R.PAUSED), "resize")
            if resources.disk_gb < vm.record.disk_gb:
                raise _err(DriverErrorCode.INVALID_INPUT, "a root disk cannot shrink")
            was_stopped = vm.record.state == R.STOPPED.value
            await vm.kill()
            vm.record.state = R.STOPPED.value
            if resources.disk_gb > vm.record.disk_gb and vm.root_disk.exists():
                await run(self.config.qemu_img, "resize", "-q", str(vm.root_disk), f"{resources.disk_gb}G")
            vm.record.vcpus, vm.record.memory_mb, vm.record.disk_gb = (resources.vcpus, resources.memory_mb,
                                                                       resources.disk_gb)
            self._save()
            if not was_stopped:
                await self._restart(vm)
            return self._info(vm)

    async def migrate_compute(self, compute_id: str, target_host_id: str, live: bool = True) -> ComputeInfo:
        self._vm(compute_id)
        raise _err(DriverErrorCode.UNSUPPORTED, "the QEMU backend manages a single host: there is nowhere to migrate")

    async def snapshot_compute(self, compute_id: str, snapshot_id: str) -> SnapshotInfo:
        """An internal qcow2 snapshot of the root disk (QMP while the process runs)."""
        vm = self._vm(compute_id)
        if snapshot_id in self._state.snapshots:
            raise _err(DriverErrorCode.CONFLICT, f"snapshot {snapshot_id} already exists")
        async with self._lock(compute_id):
            await self._internal_snapshot(vm if vm.alive() else None, "root", str(vm.root_disk), snapshot_id)
            record = SnapshotRecord(snapshot_id, compute_id, "compute", vm.record.disk_gb, time.time(),
                                    str(vm.root_disk))
            self._state.snapshots[snapshot_id] = record
            self._save()
        return SnapshotInfo(snapshot_id, compute_id, record.size_gb, datetime.fromtimestamp(record.created_at, timezone.utc),
                            f"{record.path}#{snapshot_id}")

    async def delete_compute_snapshot(self, snapshot_id: str) -> None:
        record = self._state.snapshots.get(snapshot_id)
        if record is None or record.kind != "compute":
            raise _err(DriverErrorCode.NOT_FOUND, f"compute snapshot {snapshot_id} does not exist")
        vm = self._vms.get(record.source_id)
        await self._delete_internal_snapshot(vm if vm is not None and vm.alive() else None, "root", record.path,
                                             snapshot_id)
        del self._state.snapshots[snapshot_id]
        self._save()

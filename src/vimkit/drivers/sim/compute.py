"""Simulated computes: a guest's running-state machine, resize, migration and snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vimkit.drivers.base import (
    ComputeInfo,
    ComputeResources,
    ComputeSpec,
    DriverErrorCode,
    HostStatus,
    RunningState,
    SnapshotInfo,
)
from vimkit.drivers.sim.core import R, SimCore, _err
from vimkit.drivers.sim.state import (
    Record,
    SimCompute,
    SimSnapshot,
)


class ComputeOps(SimCore):
    # ------------------------------------------------------------------ hosts

    async def list_hosts(self) -> list[HostStatus]:
        return [HostStatus(host_id, not self._host_down(host_id), {"zoneId": zone_id})
                for host_id, zone_id in self._hosts.items()]

    # ------------------------------------------------------------------ computes

    async def create_compute(self, spec: ComputeSpec) -> ComputeInfo:
        await self._enter("create_compute", spec.compute_id, spec.host_id)
        for attachment in spec.volumes:  # attached while booting: each takes (and can fail) as attach_volume does
            await self._enter("attach_volume", attachment.volume_id, spec.compute_id)
        state = self._state
        if spec.compute_id in state.computes:
            raise _err(DriverErrorCode.CONFLICT, f"compute {spec.compute_id} already exists")
        if spec.host_id not in self._hosts:
            raise _err(DriverErrorCode.INVALID_INPUT, f"host {spec.host_id} is not in the inventory")
        if self._host_down(spec.host_id):
            raise _err(DriverErrorCode.HOST_UNAVAILABLE, f"host {spec.host_id} is down", retryable=True)
        for nic in spec.nics:
            port = self._port(nic.port_id)
            if port.network_id != nic.network_id:
                raise _err(DriverErrorCode.INVALID_INPUT, f"port {port.port_id} is on network {port.network_id}")
            if port.compute_id is not None:
                raise _err(DriverErrorCode.CONFLICT, f"port {port.port_id} is plugged into {port.compute_id}")
        for attachment in spec.volumes:
            volume = self._usable_volume(self._volume(attachment.volume_id))
            if volume.attachments and not volume.multi_attach:
                raise _err(DriverErrorCode.CONFLICT, f"volume {volume.volume_id} is attached to another compute")
        now = self._now()
        compute = SimCompute(spec.compute_id, spec.name, spec.host_id, spec.zone_id, spec.vcpus, spec.memory_mb,
                             spec.disk_gb, R.RUNNING.value, spec.image_ref, epoch=0, booted_at=now, created_at=now,
                             metadata=dict(spec.metadata))
        state.computes[spec.compute_id] = compute
        for index, nic in enumerate(spec.nics):
            port = state.ports[nic.port_id]
            port.compute_id, port.device = compute.compute_id, f"eth{index}"
            compute.ports.append(port.port_id)
            compute.counters[port.port_id] = [0, 0, 0, 0]
        for attachment in spec.volumes:
            self._attach(state.volumes[attachment.volume_id], compute)
        self._save(compute, *(state.ports[nic.port_id] for nic in spec.nics),
                   *(state.volumes[attachment.volume_id] for attachment in spec.volumes))
        return self._info(compute)

    async def delete_compute(self, compute_id: str) -> None:
        """Delete even when the host is down (the "local delete" of Nova): the VIM must be able
        to clean up after a dead host."""
        await self._enter("delete_compute", compute_id)
        compute = self._compute(compute_id)
        changed: list[Record] = [compute]
        for port_id in compute.ports:
            port = self._state.ports.get(port_id)
            if port is not None:
                port.compute_id = port.device = None
                changed.append(port)
        for volume_id, _device in compute.volumes:
            volume = self._state.volumes.get(volume_id)
            if volume is not None:
                volume.attachments = [a for a in volume.attachments if a[0] != compute_id]
                changed.append(volume)
        del self._state.computes[compute_id]
        self._profiles.pop(compute_id, None)
        self._save(*changed)

    async def get_compute(self, compute_id: str) -> ComputeInfo:
        return self._info(self._compute(compute_id))

    async def list_computes(self) -> list[ComputeInfo]:
        return [self._info(c) for c in self._state.computes.values()]

    async def _operate(self, operation: str, compute_id: str, allowed: Iterable[RunningState],
                       change: Callable[[SimCompute], None]) -> ComputeInfo:
        await self._enter(operation, compute_id)
        compute = self._reachable(self._compute(compute_id))
        self._transition(compute, allowed, operation.removesuffix("_compute"))
        change(compute)
        self._save(compute)
        return self._info(compute)

    async def start_compute(self, compute_id: str) -> ComputeInfo:
        return await self._operate("start_compute", compute_id, (R.STOPPED, R.CRASHED), self._reboot)

    async def stop_compute(self, compute_id: str) -> ComputeInfo:
        def stop(compute: SimCompute) -> None:
            compute.state = R.STOPPED.value
        return await self._operate("stop_compute", compute_id, (R.RUNNING, R.PAUSED, R.SUSPENDED, R.CRASHED), stop)

    async def pause_compute(self, compute_id: str) -> ComputeInfo:
        def pause(compute: SimCompute) -> None:
            compute.state = R.PAUSED.value
        return await self._operate("pause_compute", compute_id, (R.RUNNING,), pause)

    async def unpause_compute(self, compute_id: str) -> ComputeInfo:
        def unpause(compute: SimCompute) -> None:
            compute.state = R.RUNNING.value
            compute.last_sample_at = self._now()  # nothing was transferred while paused
        return await self._operate("unpause_compute", compute_id, (R.PAUSED,), unpause)

    async def suspend_compute(self, compute_id: str) -> ComputeInfo:
        def suspend(compute: SimCompute) -> None:
            compute.state = R.SUSPENDED.value
        return await self._operate("suspend_compute", compute_id, (R.RUNNING, R.PAUSED), suspend)

    async def resume_compute(self, compute_id: str) -> ComputeInfo:
        # Resuming a saved guest starts a new process: devices, and so counters, are new.
        return await self._operate("resume_compute", compute_id, (R.SUSPENDED,), self._reboot)

    async def reboot_compute(self, compute_id: str, hard: bool = False) -> ComputeInfo:
        allowed = (R.RUNNING, R.PAUSED, R.CRASHED) if hard else (R.RUNNING,)
        return await self._operate("reboot_compute", compute_id, allowed, self._reboot)

    async def resize_compute(self, compute_id: str, resources: ComputeResources) -> ComputeInfo:
        await self._enter("resize_compute", compute_id)
        compute = self._reachable(self._compute(compute_id))
        self._transition(compute, (R.RUNNING, R.STOPPED, R.PAUSED), "resize")
        if resources.disk_gb < compute.disk_gb:
            raise _err(DriverErrorCode.INVALID_INPUT, "a root disk cannot shrink")
        compute.vcpus, compute.memory_mb, compute.disk_gb = resources.vcpus, resources.memory_mb, resources.disk_gb
        if compute.state != R.STOPPED.value:
            self._reboot(compute)
        self._save(compute)
        return self._info(compute)

    async def migrate_compute(self, compute_id: str, target_host_id: str, live: bool = True) -> ComputeInfo:
        await self._enter("migrate_compute", compute_id, target_host_id)
        compute = self._reachable(self._compute(compute_id))
        if target_host_id not in self._hosts:
            raise _err(DriverErrorCode.INVALID_INPUT, f"host {target_host_id} is not in the inventory")
        if target_host_id == compute.host_id:
            raise _err(DriverErrorCode.INVALID_INPUT, f"compute {compute_id} is already on {target_host_id}")
        if self._host_down(target_host_id):
            raise _err(DriverErrorCode.HOST_UNAVAILABLE, f"host {target_host_id} is down", retryable=True)
        allowed = (R.RUNNING, R.PAUSED) if live else (R.RUNNING, R.PAUSED, R.STOPPED, R.CRASHED)
        self._transition(compute, allowed, "live-migrate" if live else "migrate")
        compute.host_id = target_host_id
        compute.zone_id = self._hosts[target_host_id]
        if compute.state == R.CRASHED.value:
            compute.state = R.STOPPED.value
        if compute.state != R.STOPPED.value:
            self._reboot(compute, RunningState(compute.state))
        self._save(compute)
        return self._info(compute)

    async def snapshot_compute(self, compute_id: str, snapshot_id: str) -> SnapshotInfo:
        await self._enter("snapshot_compute", compute_id)
        compute = self._reachable(self._compute(compute_id))
        if snapshot_id in self._state.snapshots:
            raise _err(DriverErrorCode.CONFLICT, f"snapshot {snapshot_id} already exists")
        size = max(1, round(compute.disk_gb * 0.3))
        snapshot = SimSnapshot(snapshot_id, compute_id, "compute", size, self._now())
        self._state.snapshots[snapshot_id] = snapshot
        self._save(snapshot)
        return SnapshotInfo(snapshot_id, compute_id, size, self._ts(snapshot.created_at), f"sim-{snapshot_id}")

    async def delete_compute_snapshot(self, snapshot_id: str) -> None:
        await self._enter("delete_compute_snapshot", snapshot_id)
        snapshot = self._state.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.kind != "compute":
            raise _err(DriverErrorCode.NOT_FOUND, f"compute snapshot {snapshot_id} does not exist")
        del self._state.snapshots[snapshot_id]
        self._save(snapshot)

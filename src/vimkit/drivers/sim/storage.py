"""Simulated volumes in the inventory's storage pools (Cinder's rules for attach and delete)."""

from __future__ import annotations

from vimkit.drivers.base import (
    AttachmentInfo,
    DriverErrorCode,
    SnapshotInfo,
    VolumeInfo,
    VolumeSpec,
)
from vimkit.drivers.sim.core import SimCore, _err
from vimkit.drivers.sim.state import (
    SimSnapshot,
    SimVolume,
)
from vimkit.drivers.sim.workload import volume_fill


class StorageOps(SimCore):
    # ------------------------------------------------------------------ volumes

    async def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        await self._enter("create_volume", spec.volume_id, spec.pool_id)
        if spec.volume_id in self._state.volumes:
            raise _err(DriverErrorCode.CONFLICT, f"volume {spec.volume_id} already exists")
        pool = self._pools.get(spec.pool_id)
        if pool is None:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {spec.pool_id} is not in the inventory")
        if self._pool_failed(spec.pool_id):
            raise _err(DriverErrorCode.BACKEND_UNAVAILABLE, f"storage pool {spec.pool_id} has failed", retryable=True)
        if spec.multi_attach and not pool.multiAttach:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {spec.pool_id} has no multi-attach")
        volume = SimVolume(spec.volume_id, spec.name, spec.pool_id, spec.zone_id, spec.size_gb, spec.multi_attach,
                           volume_fill(self.config.seed, spec.volume_id))
        self._state.volumes[spec.volume_id] = volume
        self._save(volume)
        return self._volume_info(volume)

    async def delete_volume(self, volume_id: str) -> None:
        """Refused while attached or while snapshots of it exist (Cinder's rules)."""
        await self._enter("delete_volume", volume_id)
        volume = self._volume(volume_id)
        if volume.attachments:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached")
        if any(s.source_id == volume_id and s.kind == "volume" for s in self._state.snapshots.values()):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} has snapshots")
        del self._state.volumes[volume_id]
        self._save(volume)

    async def list_volumes(self) -> list[VolumeInfo]:
        return [self._volume_info(v) for v in self._state.volumes.values()]

    async def extend_volume(self, volume_id: str, size_gb: int) -> VolumeInfo:
        await self._enter("extend_volume", volume_id)
        volume = self._usable_volume(self._volume(volume_id))
        if size_gb < volume.size_gb:
            raise _err(DriverErrorCode.INVALID_INPUT, "a volume can only grow")
        volume.used_pct = round(volume.used_pct * volume.size_gb / size_gb, 3) if size_gb else 0.0
        volume.size_gb = size_gb
        self._save(volume)
        return self._volume_info(volume)

    async def migrate_volume(self, volume_id: str, pool_id: str) -> VolumeInfo:
        """Copy a detached volume into another pool (Cinder's retype with migration)."""
        await self._enter("migrate_volume", volume_id, pool_id)
        volume = self._usable_volume(self._volume(volume_id))
        pool = self._pools.get(pool_id)
        if pool is None:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {pool_id} is not in the inventory")
        if pool_id == volume.pool_id:
            raise _err(DriverErrorCode.INVALID_INPUT, f"volume {volume_id} is already in pool {pool_id}")
        if self._pool_failed(pool_id):
            raise _err(DriverErrorCode.BACKEND_UNAVAILABLE, f"storage pool {pool_id} has failed", retryable=True)
        if volume.attachments:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached")
        if volume.multi_attach and not pool.multiAttach:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {pool_id} has no multi-attach")
        volume.pool_id, volume.zone_id = pool_id, pool.zoneId
        self._save(volume)
        return self._volume_info(volume)

    async def attach_volume(self, volume_id: str, compute_id: str) -> AttachmentInfo:
        await self._enter("attach_volume", volume_id, compute_id)
        volume = self._usable_volume(self._volume(volume_id))
        compute = self._reachable(self._compute(compute_id))
        if any(c == compute_id for c, _ in volume.attachments):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is already attached to {compute_id}")
        if volume.attachments and not volume.multi_attach:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached to another compute")
        if len(compute.volumes) >= 24:
            raise _err(DriverErrorCode.NO_CAPACITY, f"compute {compute_id} has no free disk slot")
        device = self._attach(volume, compute)
        self._save(volume, compute)
        return AttachmentInfo(volume_id, compute_id, device)

    async def detach_volume(self, volume_id: str, compute_id: str) -> None:
        await self._enter("detach_volume", volume_id, compute_id)
        volume = self._volume(volume_id)
        compute = self._reachable(self._compute(compute_id))
        if not any(c == compute_id for c, _ in volume.attachments):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is not attached to {compute_id}")
        volume.attachments = [a for a in volume.attachments if a[0] != compute_id]
        compute.volumes = [v for v in compute.volumes if v[0] != volume_id]
        self._save(volume, compute)

    async def snapshot_volume(self, volume_id: str, snapshot_id: str) -> SnapshotInfo:
        await self._enter("snapshot_volume", volume_id)
        volume = self._usable_volume(self._volume(volume_id))
        if snapshot_id in self._state.snapshots:
            raise _err(DriverErrorCode.CONFLICT, f"snapshot {snapshot_id} already exists")
        size = max(1, round(volume.size_gb * volume.used_pct / 100.0))
        snapshot = SimSnapshot(snapshot_id, volume_id, "volume", size, self._now())
        self._state.snapshots[snapshot_id] = snapshot
        self._save(snapshot)
        return SnapshotInfo(snapshot_id, volume_id, size, self._ts(snapshot.created_at), f"sim-{snapshot_id}")

    async def delete_volume_snapshot(self, snapshot_id: str) -> None:
        await self._enter("delete_volume_snapshot", snapshot_id)
        snapshot = self._state.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.kind != "volume":
            raise _err(DriverErrorCode.NOT_FOUND, f"volume snapshot {snapshot_id} does not exist")
        del self._state.snapshots[snapshot_id]
        self._save(snapshot)

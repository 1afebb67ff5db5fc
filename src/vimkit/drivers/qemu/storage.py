"""Volumes as qcow2 files in pool directories; attach and detach are virtio-blk hot-plug."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from vimkit.drivers.base import (
    AttachmentInfo,
    DriverErrorCode,
    SnapshotInfo,
    VolumeInfo,
    VolumeSpec,
)
from vimkit.drivers.qemu.core import QemuCore, R, _err
from vimkit.drivers.qemu.disks import create_qcow2
from vimkit.drivers.qemu.host import CommandError, run
from vimkit.drivers.qemu.network import unplug_device
from vimkit.drivers.qemu.state import SnapshotRecord, VolumeRecord
from vimkit.drivers.qemu.vm import Vm, disk_serial, node_name

MAX_DISKS = 24


class StorageOps(QemuCore):
    async def _qemu_img(self, *args: str) -> None:
        try:
            await run(self.config.qemu_img, *args)
        except CommandError as exc:
            raise _err(DriverErrorCode.INTERNAL, str(exc)) from exc

    async def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        """An empty, thin qcow2 file (``image_ref`` is not copied in: there is no image service)."""
        if spec.volume_id in self._state.volumes:
            raise _err(DriverErrorCode.CONFLICT, f"volume {spec.volume_id} already exists")
        if spec.pool_id not in self._pools:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {spec.pool_id} is not in the inventory")
        if spec.multi_attach:
            raise _err(DriverErrorCode.INVALID_INPUT, "the QEMU backend has no multi-attach volumes")
        path = self._pool_dir(spec.pool_id) / f"{spec.volume_id}.qcow2"
        try:
            await create_qcow2(self.config.qemu_img, path, f"{max(1, spec.size_gb)}G")
        except CommandError as exc:
            raise _err(DriverErrorCode.INTERNAL, str(exc)) from exc
        volume = VolumeRecord(spec.volume_id, spec.pool_id, spec.size_gb, str(path))
        self._state.volumes[spec.volume_id] = volume
        self._save()
        return self._volume_info(volume)

    async def delete_volume(self, volume_id: str) -> None:
        volume = self._volume(volume_id)
        if volume.attachments:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached")
        if any(s.source_id == volume_id and s.kind == "volume" for s in self._state.snapshots.values()):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} has snapshots")
        Path(volume.path).unlink(missing_ok=True)
        del self._state.volumes[volume_id]
        self._save()

    async def list_volumes(self) -> list[VolumeInfo]:
        return [self._volume_info(v) for v in self._state.volumes.values()]

    def _attached_vm(self, volume: VolumeRecord) -> Vm | None:
        for compute_id, _device in volume.attachments:
            vm = self._vms.get(compute_id)
            if vm is not None and vm.alive():
                return vm
        return None

    async def extend_volume(self, volume_id: str, size_gb: int) -> VolumeInfo:
        """Online through ``block_resize`` when a running QEMU holds the file (the guest sees the
        new size about a second later), else ``qemu-img resize``."""
        volume = self._volume(volume_id)
        if size_gb < volume.size_gb:
            raise _err(DriverErrorCode.INVALID_INPUT, "a volume can only grow")
        vm = self._attached_vm(volume)
        if vm is not None:
            await vm.execute("block_resize", {"node-name": node_name(volume_id), "size": size_gb << 30})
        else:
            await self._qemu_img("resize", "-q", volume.path, f"{size_gb}G")
        volume.size_gb = size_gb
        self._save()
        return self._volume_info(volume)

    async def migrate_volume(self, volume_id: str, pool_id: str) -> VolumeInfo:
        """Move a detached volume's file (and its internal snapshots) into another pool directory."""
        volume = self._volume(volume_id)
        if pool_id not in self._pools:
            raise _err(DriverErrorCode.INVALID_INPUT, f"storage pool {pool_id} is not in the inventory")
        if pool_id == volume.pool_id:
            raise _err(DriverErrorCode.INVALID_INPUT, f"volume {volume_id} is already in pool {pool_id}")
        if volume.attachments:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached")
        target = self._pool_dir(pool_id) / Path(volume.path).name
        shutil.move(volume.path, target)
        for snapshot in self._state.snapshots.values():
            if snapshot.source_id == volume_id:
                snapshot.path = str(target)
        volume.pool_id, volume.path = pool_id, str(target)
        self._save()
        return self._volume_info(volume)

    async def attach_volume(self, volume_id: str, compute_id: str) -> AttachmentInfo:
        volume = self._volume(volume_id)
        vm = self._vm(compute_id)
        if any(c == compute_id for c, _ in volume.attachments):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is already attached to {compute_id}")
        if volume.attachments:
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is attached to another compute")
        if len(vm.record.volumes) >= MAX_DISKS:
            raise _err(DriverErrorCode.NO_CAPACITY, f"compute {compute_id} has no free disk slot")
        async with self._lock(compute_id):
            if vm.alive():
                node = node_name(volume_id)
                await vm.execute("blockdev-add", {"driver": "qcow2", "node-name": node,
                                                  "file": {"driver": "file", "filename": volume.path}})
                try:
                    await vm.execute("device_add", {"driver": "virtio-blk-pci", "drive": node, "id": f"dev-{node}",
                                                    "serial": disk_serial(volume_id)})
                except Exception:
                    await vm.execute("blockdev-del", {"node-name": node})
                    raise
            device = self._attach_record(volume, vm.record)
            self._save()
        return AttachmentInfo(volume_id, compute_id, device)

    async def detach_volume(self, volume_id: str, compute_id: str) -> None:
        volume = self._volume(volume_id)
        vm = self._vm(compute_id)
        if not any(c == compute_id for c, _ in volume.attachments):
            raise _err(DriverErrorCode.CONFLICT, f"volume {volume_id} is not attached to {compute_id}")
        async with self._lock(compute_id):
            if vm.alive():
                if vm.record.state != R.RUNNING.value:
                    raise _err(DriverErrorCode.CONFLICT, "a paused guest cannot release a disk: unpause it first")
                node = node_name(volume_id)
                await unplug_device(vm, f"dev-{node}")
                await vm.execute("blockdev-del", {"node-name": node})
            volume.attachments = [a for a in volume.attachments if a[0] != compute_id]
            vm.record.volumes = [v for v in vm.record.volumes if v[0] != volume_id]
            self._save()

    async def snapshot_volume(self, volume_id: str, snapshot_id: str) -> SnapshotInfo:
        """An internal qcow2 snapshot: QMP when a running QEMU holds the file, else qemu-img."""
        volume = self._volume(volume_id)
        if snapshot_id in self._state.snapshots:
            raise _err(DriverErrorCode.CONFLICT, f"snapshot {snapshot_id} already exists")
        vm = self._attached_vm(volume)
        await self._internal_snapshot(vm, node_name(volume_id), volume.path, snapshot_id)
        used = Path(volume.path).stat().st_blocks * 512
        record = SnapshotRecord(snapshot_id, volume_id, "volume", max(1, round(used / (1 << 30))), time.time(),
                                volume.path)
        self._state.snapshots[snapshot_id] = record
        self._save()
        return SnapshotInfo(snapshot_id, volume_id, record.size_gb,
                            datetime.fromtimestamp(record.created_at, timezone.utc), f"{volume.path}#{snapshot_id}")

    async def delete_volume_snapshot(self, snapshot_id: str) -> None:
        record = self._state.snapshots.get(snapshot_id)
        if record is None or record.kind != "volume":
            raise _err(DriverErrorCode.NOT_FOUND, f"volume snapshot {snapshot_id} does not exist")
        volume = self._state.volumes.get(record.source_id)
        vm = self._attached_vm(volume) if volume is not None else None
        await self._delete_internal_snapshot(vm, node_name(record.source_id), record.path,
                                             snapshot_id)
        del self._state.snapshots[snapshot_id]
        self._save()

"""The QEMU backend's shared machinery: state, locks, wiring, the crash watchdog, reconnection."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pycdlib

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
from vimkit.drivers.qemu import configdrive
from vimkit.drivers.qemu.config import LOCAL_HOST_ID, QemuConfig, resolve_accel
from vimkit.drivers.qemu.host import Namespace, run, tap_name
from vimkit.drivers.qemu.state import PortRecord, QemuState, VmRecord, VolumeRecord
from vimkit.drivers.qemu.state import sync as state_sync
from vimkit.drivers.qemu.vm import DiskWiring, NicWiring, Vm
from vimkit.infra.inventory import Inventory

log = logging.getLogger("vimkit.drivers.qemu")
R = RunningState
#: States in which a QEMU process should exist; its disappearance there is a crash.
LIVE = (R.RUNNING.value, R.PAUSED.value, R.SUSPENDED.value, R.REBOOTING.value, R.STARTING.value)
#: How long a guest may take to configure a hot-plugged NIC from the guest channel.
AGENT_TIMEOUT = 20.0


def _err(code: DriverErrorCode, message: str, retryable: bool = False) -> DriverError:
    return DriverError(code, message, retryable)


class QemuCore:
    #: Set by the VIM's image registry (vimkit.domain.images): image id → its document, or None.
    image_resolver: Callable[[str], dict[str, Any] | None] | None = None

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
        self._closing: set[asyncio.Task[None]] = set()
        self._syncer: asyncio.Task[None] | None = None
        self._unsynced = False

    def _new_vm(self, record: VmRecord) -> Vm:
        return Vm(record, self.config, self.namespace, self.accel)

    # ------------------------------------------------------------------ plumbing

    def _save(self) -> None:
        """Write the state file now (a crash of the VIM loses nothing), flush it to disk soon: an
        fsync took 8–20 ms on a busy disk, blocking the event loop several times per create."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._state.save(self.config.state_dir)
            return
        self._state.save(self.config.state_dir, durable=False)
        self._unsynced = True
        if self._syncer is None or self._syncer.done():
            self._syncer = loop.create_task(self._sync_state(), name="vimkit-qemu-state-sync")

    async def _sync_state(self) -> None:
        # One fsync covers every save made before it started: saves in a burst share one.
        while self._unsynced:
            self._unsynced = False
            try:
                await asyncio.to_thread(state_sync, self.config.state_dir)
            except OSError:
                log.exception("cannot flush the QEMU state file")

    async def _flush_state(self) -> None:
        if self._syncer is not None:
            await asyncio.gather(self._syncer, return_exceptions=True)
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
                                    "bootSeconds": r.boot_seconds, "prepareSeconds": r.prepare_seconds,
                                    "queueSeconds": r.queue_seconds})

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

    def _nic_config(self, port: PortRecord) -> dict[str, Any]:
        """What the guest needs to configure the NIC: MAC, MTU and the IPAM's first IPv4 address."""
        network = self._state.networks.get(port.network_id)
        config: dict[str, Any] = {"id": port.port_id, "mac": port.mac_address.lower(), "network_id": port.network_id,
                                  "mtu": network.mtu if network else None, "address": None, "gateway": None}
        for subnet_id, address in port.fixed_ips:
            subnet = self._state.subnets.get(subnet_id)
            if subnet is None or ipaddress.ip_address(address).version != 4:
                continue
            prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
            config["address"], config["gateway"] = f"{address}/{prefix}", subnet.gateway_ip
            break  # the test guest configures one IPv4 address per NIC
        return config

    def _nic_wiring(self, port: PortRecord) -> NicWiring:
        """The tap and what the guest's init needs to configure the NIC from the VIM's IPAM."""
        config = self._nic_config(port)
        parts = [config["mac"], *(v for v in (config["address"], config["address"] and config["gateway"]) if v)]
        return NicWiring(port.port_id, tap_name(port.port_id), port.mac_address.lower(), ",".join(parts))

    def _disk_wiring(self, record: VmRecord) -> list[DiskWiring]:
        return [DiskWiring(volume_id, self._state.volumes[volume_id].path)
                for volume_id, _device in record.volumes if volume_id in self._state.volumes]

    async def _ensure_taps(self, record: VmRecord) -> list[NicWiring]:
        ports = [self._state.ports[port_id] for port_id in record.ports]
        await asyncio.gather(*(self.namespace.add_tap(port.port_id, port.network_id,
                                                      self._state.networks[port.network_id].mtu) for port in ports))
        return [self._nic_wiring(port) for port in ports]

    def default_images(self) -> list[tuple[str, str, dict[str, str]]]:
        """What the image registry seeds on a fresh database: the test guest in the guest
        directory as public image ``test-guest``, and each sub-directory holding a guest by its name."""
        images = []
        base = self.config.guest_dir
        for image_id, directory in [("test-guest", base), *((d.name, d) for d in sorted(base.glob("*")) if d.is_dir())]:
            kernel, initrd = directory / "vmlinuz", directory / "initramfs.img"
            if kernel.is_file() and initrd.is_file():
                images.append((image_id, "KERNEL_INITRD", {"kernel": str(kernel), "initrd": str(initrd)}))
        return images

    def _guest_files(self, image_ref: str | None) -> tuple[str, str]:
        """Without an image registry (the driver used on its own): an image id naming a directory
        under the guest directory selects that kernel+initramfs pair, anything else the default."""
        base = self.config.guest_dir
        candidates = ([base / image_ref] if image_ref and "/" not in image_ref and image_ref not in (".", "..") else [])
        for directory in [*candidates, base]:
            kernel, initrd = directory / "vmlinuz", directory / "initramfs.img"
            if kernel.is_file() and initrd.is_file():
                return str(kernel), str(initrd)
        raise _err(DriverErrorCode.BACKEND_UNAVAILABLE,
                   f"no guest in {base} (build one with scripts/build-test-guest.sh {base})")

    @staticmethod
    def _checked_files(image_id: str, files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        by_role = {}
        for entry in files:
            path = Path(entry["path"])
            try:
                size = path.stat().st_size
            except OSError:
                raise _err(DriverErrorCode.INVALID_INPUT, f"image {image_id}: {path} is gone") from None
            if size != entry.get("sizeBytes", size):
                raise _err(DriverErrorCode.INVALID_INPUT,
                           f"image {image_id}: {path} changed since it was registered ({size} bytes, "
                           f"{entry['sizeBytes']} then)")
            by_role[entry["role"]] = entry
        return by_role

    async def _boot_source(self, image_ref: str | None) -> dict[str, Any]:
        """Kernel, initramfs and root disk origin for ``VmRecord`` from the compute's image: a
        registered image (the registry's resolver), a compute snapshot of this backend, or (the
        driver on its own) a guest directory."""
        document = None
        if image_ref and self.image_resolver is not None:
            document = await asyncio.to_thread(self.image_resolver, image_ref)
        if document is not None:
            if not document.get("files"):
                raise _err(DriverErrorCode.INVALID_INPUT, f"image {image_ref} has no files (a catalogue placeholder): "
                                                          f"register a kernel+initramfs or a disk image")
            files = self._checked_files(image_ref or "", document["files"])
            if document["kind"] == "KERNEL_INITRD":
                return {"kernel": files["kernel"]["path"], "initrd": files["initrd"]["path"]}
            source = {"root_backing": files["disk"]["path"], "root_backing_format": files["disk"].get("format", "raw"),
                      "kernel": "", "initrd": ""}
            if document.get("kernelImageId"):
                kernel = self._checked_files(document["kernelImageId"], document.get("kernelFiles") or [])
                if "kernel" not in kernel or "initrd" not in kernel:
                    raise _err(DriverErrorCode.INVALID_INPUT,
                               f"image {image_ref}: kernel image {document['kernelImageId']} is gone")
                source.update(kernel=kernel["kernel"]["path"], initrd=kernel["initrd"]["path"])
            return source
        snapshot = self._state.snapshots.get(image_ref or "")
        kernel, initrd = self._guest_files(None if snapshot else image_ref)
        if snapshot is not None and snapshot.kind == "compute":
            if not os.path.exists(snapshot.path):
                raise _err(DriverErrorCode.INVALID_INPUT, f"snapshot {image_ref}: its disk is gone")
            return {"kernel": kernel, "initrd": initrd, "root_snapshot": [snapshot.path, snapshot.snapshot_id]}
        return {"kernel": kernel, "initrd": initrd}

    @staticmethod
    def _encode_user_data(content: str | None) -> str:
        if not content:
            return ""
        raw = content.encode()
        if len(raw) > configdrive.MAX_USER_DATA:
            raise _err(DriverErrorCode.INVALID_INPUT,
                       f"userData is {len(raw)} bytes; the config drive takes at most {configdrive.MAX_USER_DATA}")
        return base64.b64encode(raw).decode()

    async def _write_config_drive(self, vm: Vm) -> None:
        r = vm.record
        vm.dir.mkdir(parents=True, exist_ok=True)
        nics = [self._nic_config(self._state.ports[p]) for p in r.ports if p in self._state.ports]
        try:
            await configdrive.build(vm.config_drive, r.compute_id, r.name, r.metadata,
                                    base64.b64decode(r.user_data) if r.user_data else None, nics)
        except (OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
            raise _err(DriverErrorCode.INTERNAL, f"cannot build the config drive of {r.compute_id}: {exc}") from exc

    async def _configure_hotplugged(self, vm: Vm) -> None:
        """NICs not on the current process's command line (hot-plugged, then a guest reboot)
        are configured over the guest channel."""
        for port_id in vm.record.ports:
            if port_id not in vm.record.boot_ports and port_id in self._state.ports:
                await self._agent_configure(vm, self._state.ports[port_id])

    async def _agent_configure(self, vm: Vm, port: PortRecord) -> bool:
        config = self._nic_config(port)
        line = " ".join(v for v in ("NET", config["mac"], config["address"] or "", config["gateway"] or "") if v)
        done = await vm.agent_request(line, f"NET-OK {config['mac']}", AGENT_TIMEOUT)
        if not done:
            log.warning("compute %s did not confirm the configuration of NIC %s (a guest without the vimkit "
                        "channel configures it itself)", vm.compute_id, port.port_id)
        return done

    async def _boot(self, vm: Vm) -> None:
        """Prepare the taps, the config drive and the root disk (concurrently), then launch the
        process and wait for the ready marker, one of ``boot_slots`` boots at a time. Records how
        long each phase took: ``prepare_seconds``, ``queue_seconds`` (waiting for a boot slot),
        ``boot_seconds`` (QEMU launch to ready marker)."""
        began = time.monotonic()
        marks = vm.record.marks
        marks.setdefault("entered", time.time())
        marks["preparing"] = time.time()

        async def timed(name: str, step: Any) -> Any:
            result = await step
            marks[name] = time.time()
            return result

        nics, _drive, _root = await asyncio.gather(timed("taps", self._ensure_taps(vm.record)),
                                                   timed("drive", self._write_config_drive(vm)),
                                                   timed("root", vm.ensure_root_disk()))
        prepared = time.monotonic()
        async with self._slots():
            offset = 0
            vm.serial_log.unlink(missing_ok=True)  # a new process: only its own marker counts
            started = time.monotonic()
            await vm.launch(nics, self._disk_wiring(vm.record))
            self._save()  # the pid, so a crash of the VIM now leaves a VM it can find again
            if vm.record.kernel:
                await vm.wait_ready(offset, self.config.boot_timeout)
            # A disk image booted by its own loader prints no marker: it is up once QEMU runs it.
            ready = time.monotonic()
            vm.record.boot_seconds = round(ready - started, 3)
            vm.record.prepare_seconds = round(prepared - began, 3)
            vm.record.queue_seconds = round(started - prepared, 3)
            wall = time.time() - time.monotonic()
            vm.record.marks.update(prepared=wall + prepared, launched=wall + started, ready=wall + ready)

    def _attach_record(self, volume: VolumeRecord, record: VmRecord) -> str:
        used = {device for _volume, device in record.volumes}
        # vda is the root disk, vdb the config drive the VM is created with.
        device = next(f"/dev/vd{c}" for c in "cdefghijklmnopqrstuvwxyz" if f"/dev/vd{c}" not in used)
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
        # Close the dead QMP session (its reader ended with EOFError, which must be collected).
        client, vm.qmp = vm.qmp, None
        if client is not None:
            task = asyncio.get_running_loop().create_task(self._close_qmp(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._save()
        self._emit(EventKind.COMPUTE_CRASHED, ObjectType.COMPUTE, vm.compute_id,
                   {"reason": reason, "hostId": vm.record.host_id, "runningState": R.CRASHED.value})

    @staticmethod
    async def _close_qmp(client: Any) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:  # noqa: BLE001 - the peer is gone: that is the point
            pass

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

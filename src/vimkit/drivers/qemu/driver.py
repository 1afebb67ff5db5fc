"""The QEMU backend: real VMs on the host the VIM runs on (see docs/qemu.md).

One QEMU process per compute, driven over QMP; networks are Linux bridges with a VXLAN uplink in
a network namespace the VIM owns, ports are taps, volumes are qcow2 files. The state directory
(``<data_dir>/qemu``) holds the VMs' sockets, pid files, logs, root disks and the volume pools,
and a state file naming them: :meth:`QemuDriver.start` re-attaches to the VMs that are still
running and reports as crashed those that died while the VIM was down.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from vimkit.drivers.base import (
    Capabilities,
    DriverEvent,
    DriverErrorCode,
    FaultInfo,
    FaultKind,
    MetricName,
)
from vimkit.drivers.qemu.compute import ComputeOps
from vimkit.drivers.qemu.config import missing_tools
from vimkit.drivers.qemu.core import _err
from vimkit.drivers.qemu.metrics import MetricOps
from vimkit.drivers.qemu.network import NetworkOps
from vimkit.drivers.qemu.storage import StorageOps

COMPUTE_OPERATIONS = frozenset(
    {"START", "STOP", "PAUSE", "UNPAUSE", "SUSPEND", "RESUME", "REBOOT", "CREATE_SNAPSHOT", "DELETE_SNAPSHOT"}
)


class QemuDriver(ComputeOps, NetworkOps, StorageOps, MetricOps):
    """``QemuDriver(QemuConfig(state_dir=…, guest_dir=…), inventory)``."""

    name = "qemu"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name=self.name,
            compute_operations=COMPUTE_OPERATIONS,
            network_types=frozenset({"vxlan", "flat", "vlan"}),
            live_migration=False,
            cold_migration=False,
            online_resize=False,
            volume_online_extend=True,
            volume_snapshots=True,
            multi_attach=False,
            metrics=frozenset(MetricName),
            fault_injection=False,
            schedules_itself=False,
            persistent=True,
            max_concurrent_creates=self.config.boot_slots,
        )

    async def start(self) -> None:
        missing = missing_tools(self.config)
        if missing:
            raise _err(DriverErrorCode.BACKEND_UNAVAILABLE, f"the QEMU backend needs {', '.join(missing)}")
        await self._reconnect()
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(), name="vimkit-qemu-watchdog")

    async def close(self) -> None:
        """Leaves the VMs running (a restarted VIM re-attaches to them); :meth:`destroy_all` does not."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        for vm in self._vms.values():
            await vm.disconnect()
        await self._flush_state()
        self._hub.close()

    async def destroy_all(self) -> None:
        """Kill every VM and remove the namespace and every file (tests, and uninstalling)."""
        for compute_id in list(self._vms):
            await self.delete_compute(compute_id)
        await self.namespace.delete()
        shutil.rmtree(Path("/run") / self.namespace.name, ignore_errors=True)  # short socket paths

    def events(self) -> AsyncIterator[DriverEvent]:
        subscription = self._hub.subscribe()
        pending, self._pending_events = self._pending_events, []
        for event in pending:
            self._hub.publish(event)
        return subscription

    # Real infrastructure has real faults only: nothing to inject.
    async def inject(self, kind: FaultKind | str, target_id: str, params: Mapping[str, Any] | None = None) -> str:
        raise _err(DriverErrorCode.UNSUPPORTED, "the QEMU backend has real faults only: kill a QEMU process instead")

    async def repair(self, fault_id: str) -> None:
        raise _err(DriverErrorCode.NOT_FOUND, f"fault {fault_id} does not exist")

    def faults(self) -> list[FaultInfo]:
        return []

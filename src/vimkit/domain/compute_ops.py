"""Operate, scale, migrate and update of computes; compute affinity groups; resource information.

A mixin of :class:`vimkit.domain.compute.ComputeService`. The task operations share one shape:
under the compute's lock the request is checked against the current state (an illegal
``runningState`` transition or a busy compute → 409), capacity is re-claimed when it changes,
and the compute is committed as ``UPDATING`` with ``lastOperation`` PROCESSING; a background
task then asks the driver and commits the outcome — ``ALLOCATED`` with the new state and
``lastOperation`` COMPLETED, or the previous state with ``lastOperation`` FAILED and its
``error`` — announced by one MODIFIED change notification. A failed task gives back what it
claimed: the compute is exactly as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, select

from vimkit.api.problems import conflict, invalid, not_found, problem_body
from vimkit.auth.principal import Principal
from vimkit.domain.compute_support import disk_document, driver_error_of, flavour_numbers, now_text, placement_error
from vimkit.domain.metadata import merge_metadata
from vimkit.drivers.base import ComputeResources, DriverError, DriverErrorCode
from vimkit.models.compute import (
    ComputeAffinityGroup,
    ComputeAffinityGroupCreate,
    ComputeMigrateRequest,
    ComputeOperateRequest,
    ComputeOperation,
    ComputeUpdateRequest,
    MigrationType,
)
from vimkit.models.network import VirtualNetworkPortData
from vimkit.placement.model import Claim, MoveTarget, NoValidHost, PlacementError
from vimkit.store.compute_tables import ComputeAffinityGroupRow, ComputeRow, ComputeSnapshotRow
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.repository import Page, PageRequest, check_if_match, get_document, list_documents, utcnow, visibility_of

if TYPE_CHECKING:
    from vimkit.domain.compute import ComputeService

AFFINITY_GROUP_SCHEMA = FilterSchema.from_model(
    ComputeAffinityGroup, ComputeAffinityGroupRow.body, columns={"groupId": ComputeAffinityGroupRow.id})

Edit = Callable[[dict[str, Any]], dict[str, Any]]

# runningState values each command is allowed from, the transitional state shown meanwhile, and
# the driver method (the running-state machine of docs/compute.md).
_OPERATIONS: dict[ComputeOperation, tuple[tuple[str, ...], str | None, str]] = {
    ComputeOperation.START: (("STOPPED", "CRASHED"), "STARTING", "start_compute"),
    ComputeOperation.STOP: (("RUNNING", "PAUSED", "SUSPENDED", "CRASHED"), None, "stop_compute"),
    ComputeOperation.PAUSE: (("RUNNING",), None, "pause_compute"),
    ComputeOperation.UNPAUSE: (("PAUSED",), None, "unpause_compute"),
    ComputeOperation.SUSPEND: (("RUNNING", "PAUSED"), None, "suspend_compute"),
    ComputeOperation.RESUME: (("SUSPENDED",), "STARTING", "resume_compute"),
    ComputeOperation.REBOOT: (("RUNNING",), "REBOOTING", "reboot_compute"),
    ComputeOperation.CREATE_SNAPSHOT: (("RUNNING", "STOPPED", "PAUSED", "SUSPENDED"), None, "snapshot_compute"),
    ComputeOperation.DELETE_SNAPSHOT: (("RUNNING", "STOPPED", "PAUSED", "SUSPENDED", "CRASHED"), None,
                                       "delete_compute_snapshot"),
}
_HARD_REBOOT_FROM = ("RUNNING", "PAUSED", "CRASHED")


class ComputeOperations:
    _locks: dict[str, asyncio.Lock]

    def _lock(self: ComputeService, compute_id: str) -> asyncio.Lock:
        lock = self._locks.get(compute_id)
        if lock is None:
            lock = self._locks[compute_id] = asyncio.Lock()
        return lock

    def _current(self: ComputeService, principal: Principal, compute_id: str, if_match: str | None,
                 action: str) -> ComputeRow:
        row = self.get(principal, compute_id)
        check_if_match(if_match, row)
        if row.state != "ALLOCATED":
            raise conflict(f"cannot {action} compute '{compute_id}' while it is {row.state}")
        return row

    async def _task(self: ComputeService, principal: Principal, compute_id: str, operation: str, transitional: str | None,
                    work: Callable[[], Awaitable[Edit]], *, undo: Callable[[], None] | None = None,
                    claim_after: Callable[[], Claim | None] | None = None,
                    output: dict[str, Any] | None = None) -> tuple[ComputeRow, asyncio.Task[Any]]:
        """Commit UPDATING and start ``work`` in the background (see the module docstring)."""

        def begin(body: dict[str, Any]) -> dict[str, Any]:
            body["provisioningState"] = "UPDATING"
            if transitional is not None:
                body["runningState"] = transitional
            body["lastOperation"] = {"operation": operation, "status": "PROCESSING", "startedAt": now_text()}
            if output:
                body["lastOperation"]["outputData"] = output
            return body

        try:
            row = await asyncio.to_thread(self.change, principal, compute_id, begin, None, expect=("ALLOCATED",))
        except BaseException:
            if undo is not None:
                await asyncio.to_thread(undo)
            raise
        previous_state = row.body.get("runningState")

        async def run() -> None:
            try:
                edit = await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported on the compute and to a waiting client
                error = driver_error_of(exc)
                if undo is not None:
                    await asyncio.to_thread(undo)
                state = await self._driver_state(compute_id, previous_state)

                def failed(body: dict[str, Any]) -> dict[str, Any]:
                    body["provisioningState"] = "ALLOCATED"
                    if state is not None:
                        body["runningState"] = state
                    body["lastOperation"] = {**body.get("lastOperation", {}), "status": "FAILED",
                                             "finishedAt": now_text(), "error": problem_body(error)}
                    return body

                await asyncio.to_thread(self.change, None, compute_id, failed, "MODIFIED",
                                        claim=self.infra.placement.get(compute_id))
                raise error from exc

            def finished(body: dict[str, Any]) -> dict[str, Any]:
                body = edit(body)
                body["provisioningState"] = "ALLOCATED"
                body["lastOperation"] = {**body.get("lastOperation", {}), "status": "COMPLETED",
                                         "finishedAt": now_text()}
                body["lastOperation"].pop("error", None)
                return body

            await asyncio.to_thread(self.change, None, compute_id, finished, "MODIFIED",
                                    claim=claim_after() if claim_after else None)

        return row, self.spawn(compute_id, run(), operation)

    async def _driver_state(self: ComputeService, compute_id: str, fallback: str | None) -> str | None:
        try:
            return (await self.infra.driver.get_compute(compute_id)).running_state.value
        except DriverError:
            return fallback

    # ------------------------------------------------------------------ operate

    async def operate(self: ComputeService, principal: Principal, compute_id: str, data: ComputeOperateRequest,
                      if_match: str | None) -> tuple[ComputeRow, asyncio.Task[Any], dict[str, Any]]:
        operation = data.computeOperation
        inputs = data.computeOperationInputData
        allowed, transitional, method = _OPERATIONS[operation]
        if operation.value not in self.infra.driver.capabilities().compute_operations:
            raise conflict(f"the infrastructure cannot {operation.value}")
        hard = False
        if operation is ComputeOperation.REBOOT:
            kind = inputs.get("type", "SOFT").upper()
            if kind not in ("SOFT", "HARD"):
                raise invalid("computeOperationInputData/type", "must be SOFT or HARD")
            hard = kind == "HARD"
            allowed = _HARD_REBOOT_FROM if hard else allowed
        async with self._lock(compute_id):
            row = await asyncio.to_thread(self._current, principal, compute_id, if_match, operation.value.lower())
            state = row.body.get("runningState")
            if state not in allowed:
                raise conflict(f"cannot {operation.value} compute '{compute_id}' while it is {state} "
                               f"(allowed from {', '.join(allowed)})")
            driver = self.infra.driver
            output: dict[str, Any] = {}
            if operation is ComputeOperation.CREATE_SNAPSHOT:
                snapshot_id = str(uuid.uuid4())
                output = {"snapshotId": snapshot_id}
                name = inputs.get("snapshotName")

                async def work() -> Edit:
                    info = await driver.snapshot_compute(compute_id, snapshot_id)
                    snapshot = {"snapshotId": snapshot_id, "sizeOfStorage": info.size_gb,
                                "createdAt": info.created_at.isoformat().replace("+00:00", "Z")}
                    if name:
                        snapshot["snapshotName"] = name
                    try:
                        await asyncio.to_thread(self._store_snapshot, row, snapshot)
                    except BaseException:
                        await driver.delete_compute_snapshot(snapshot_id)
                        raise

                    def edit(body: dict[str, Any]) -> dict[str, Any]:
                        body["snapshots"] = [*body.get("snapshots", []), snapshot]
                        return body
                    return edit
            elif operation is ComputeOperation.DELETE_SNAPSHOT:
                snapshot_id = inputs.get("snapshotId") or ""
                if not snapshot_id:
                    raise invalid("computeOperationInputData/snapshotId", "required for DELETE_SNAPSHOT")
                if not any(s["snapshotId"] == snapshot_id for s in row.body.get("snapshots", [])):
                    raise invalid("computeOperationInputData/snapshotId",
                                  f"compute '{compute_id}' has no snapshot '{snapshot_id}'")
                output = {"snapshotId": snapshot_id, "deleted": True}

                async def work() -> Edit:
                    try:
                        await driver.delete_compute_snapshot(snapshot_id)
                    except DriverError as exc:
                        if exc.code is not DriverErrorCode.NOT_FOUND:
                            raise
                    await asyncio.to_thread(self._drop_snapshot, snapshot_id)

                    def edit(body: dict[str, Any]) -> dict[str, Any]:
                        body["snapshots"] = [s for s in body.get("snapshots", []) if s["snapshotId"] != snapshot_id]
                        return body
                    return edit
            else:
                call = getattr(driver, method)

                async def work() -> Edit:
                    info = await (call(compute_id, hard=hard) if operation is ComputeOperation.REBOOT
                                  else call(compute_id))

                    def edit(body: dict[str, Any]) -> dict[str, Any]:
                        body["runningState"] = info.running_state.value
                        body["operationalState"] = "DISABLED" if info.running_state.value == "CRASHED" else "ENABLED"
                        body.pop("stateReason", None)
                        return body
                    return edit

            row, task = await self._task(principal, compute_id, operation.value, transitional, work, output=output)
        return row, task, output

    def _store_snapshot(self: ComputeService, compute: ComputeRow, snapshot: dict[str, Any]) -> None:
        now = utcnow()
        with self.database.write() as session:
            session.add(ComputeSnapshotRow(id=snapshot["snapshotId"], compute_id=compute.id,
                                           resource_group_id=compute.resource_group_id, created_at=now,
                                           updated_at=now, version=1, body={**snapshot, "sourceComputeId": compute.id}))

    def _drop_snapshot(self: ComputeService, snapshot_id: str) -> None:
        with self.database.write() as session:
            row = session.scalar(select(ComputeSnapshotRow).where(ComputeSnapshotRow.id == snapshot_id))
            if row is not None:
                session.delete(row)

    # ------------------------------------------------------------------ scale

    async def scale(self: ComputeService, principal: Principal, compute_id: str, flavour_id: str,
                    if_match: str | None) -> tuple[ComputeRow, asyncio.Task[Any]]:
        flavour = await asyncio.to_thread(self.rules.flavour, self.flavours, principal, flavour_id, "computeFlavourId")
        vcpus, memory_mb, disk_gb, arch = flavour_numbers(flavour)
        placement = self.infra.placement
        async with self._lock(compute_id):
            row = await asyncio.to_thread(self._current, principal, compute_id, if_match, "scale")
            if flavour_id == row.body["flavourId"]:
                raise invalid("computeFlavourId", f"compute '{compute_id}' already has flavour '{flavour_id}'")
            old = placement.get(compute_id)
            if old is None:
                raise conflict(f"compute '{compute_id}' holds no capacity to scale")
            if disk_gb < old.disk_gb:
                raise invalid("computeFlavourId", f"the local disk cannot shrink from {old.disk_gb} to {disk_gb} GB")
            wanted = old.request.with_amounts(vcpus, memory_mb, disk_gb)
            if arch != old.request.cpu_architecture:
                wanted = replace(wanted, cpu_architecture=arch)
            moved = False

            def decide() -> Claim:
                nonlocal moved
                try:
                    return placement.resize(compute_id, wanted)
                except NoValidHost:
                    moved = True
                    return placement.move(compute_id, None, wanted)

            try:
                claim = await self.infra.decide_async("compute", compute_id, decide)
            except PlacementError as exc:
                raise placement_error(exc, "computeFlavourId") from exc
            driver = self.infra.driver
            source_host = old.host_id

            def undo() -> None:
                if moved:
                    placement.revert_move(compute_id)
                else:
                    placement.resize(compute_id, old.request)
                self.infra.persist_claim("compute", compute_id)

            async def work() -> Edit:
                if moved:
                    await driver.migrate_compute(compute_id, claim.host_id, live=False)
                try:
                    info = await driver.resize_compute(compute_id, ComputeResources(vcpus, memory_mb, disk_gb))
                except BaseException:
                    if moved:
                        try:
                            await driver.migrate_compute(compute_id, source_host, live=False)
                        except DriverError:
                            pass
                    raise

                def edit(body: dict[str, Any]) -> dict[str, Any]:
                    body.update(flavourId=flavour["flavourId"], virtualCpu=dict(flavour["virtualCpu"]),
                                virtualMemory=dict(flavour["virtualMemory"]), hostId=claim.host_id,
                                zoneId=claim.zone_id, runningState=info.running_state.value,
                                accelerationCapability=list(flavour.get("accelerationCapability") or []))
                    return body
                return edit

            def claim_after() -> Claim | None:
                return placement.confirm_move(compute_id) if moved else placement.get(compute_id)

            return await self._task(principal, compute_id, "SCALE", None, work, undo=undo, claim_after=claim_after)

    # ------------------------------------------------------------------ migrate

    async def migrate(self: ComputeService, principal: Principal, compute_id: str, data: ComputeMigrateRequest,
                      if_match: str | None) -> tuple[ComputeRow, asyncio.Task[Any]]:
        live = data.migrationType is MigrationType.LIVE_MIGRATION
        zone_ids, host_id = self.rules.location(data.migrationConstraint, "migrationConstraint")
        rules = None
        if data.affinityOrAntiAffinityConstraints is not None:
            def resolve() -> Any:
                with self.database.read() as session:
                    return self.rules.affinity(session, principal, data.affinityOrAntiAffinityConstraints or [],
                                               "affinityOrAntiAffinityConstraints")
            rules = await asyncio.to_thread(resolve)
        capabilities = self.infra.driver.capabilities()
        if (live and not capabilities.live_migration) or (not live and not capabilities.cold_migration):
            raise conflict(f"the infrastructure cannot do {data.migrationType.value}")
        placement = self.infra.placement
        async with self._lock(compute_id):
            row = await asyncio.to_thread(self._current, principal, compute_id, if_match, "migrate")
            state = row.body.get("runningState")
            if live and state not in ("RUNNING", "PAUSED"):
                raise conflict(f"a {state} compute cannot be live-migrated; use OFFLINE_MIGRATION")
            try:
                claim = await self.infra.decide_async(
                    "compute", compute_id, lambda: placement.move(compute_id, MoveTarget(zone_ids, host_id, rules)))
            except PlacementError as exc:
                raise placement_error(exc, "migrationConstraint") from exc

            def undo() -> None:
                placement.revert_move(compute_id)
                self.infra.persist_claim("compute", compute_id)

            async def work() -> Edit:
                info = await self.infra.driver.migrate_compute(compute_id, claim.host_id, live=live)

                def edit(body: dict[str, Any]) -> dict[str, Any]:
                    body.update(hostId=claim.host_id, zoneId=claim.zone_id, runningState=info.running_state.value)
                    if info.running_state.value != "CRASHED":
                        body["operationalState"] = "ENABLED"
                    if rules is not None:
                        body["affinityOrAntiAffinityConstraints"] = [
                            c.model_dump(mode="json", exclude_none=True) for c in data.affinityOrAntiAffinityConstraints or []]
                    return body
                return edit

            return await self._task(principal, compute_id, data.migrationType.value, None, work,
                                    undo=undo, claim_after=lambda: placement.confirm_move(compute_id))

    # ------------------------------------------------------------------ update (NICs, disks, metadata)

    async def update(self: ComputeService, principal: Principal, compute_id: str, patch: ComputeUpdateRequest,
                     if_match: str | None) -> ComputeRow:
        """Synchronous and all-or-nothing: additions first, then removals; on any failure what was
        done is undone in reverse order and the compute is unchanged."""
        async with self._lock(compute_id):
            row = await asyncio.to_thread(self._current, principal, compute_id, if_match, "update")
            body = row.body
            nics = {nic["resourceId"]: nic for nic in body.get("virtualNetworkInterface") or []}
            disks = {disk["storageId"] for disk in body.get("virtualDisks") or []}
            for index, nic_id in enumerate(patch.networkInterfaceDelete):
                if nic_id not in nics:
                    raise invalid(f"networkInterfaceDelete/{index}", f"compute '{compute_id}' has no NIC '{nic_id}'")
            for index, change in enumerate(patch.networkInterfaceUpdate):
                if change.resourceId not in nics:
                    raise invalid(f"networkInterfaceUpdate/{index}/resourceId",
                                  f"compute '{compute_id}' has no NIC '{change.resourceId}'")
                if change.resourceId in patch.networkInterfaceDelete:
                    raise invalid(f"networkInterfaceUpdate/{index}/resourceId", "the NIC is also being deleted")
            for index, storage_id in enumerate(patch.virtualDiskDetach):
                if storage_id not in disks:
                    raise invalid(f"virtualDiskDetach/{index}", f"storage '{storage_id}' is not attached to '{compute_id}'")
            for index, storage_id in enumerate(patch.virtualDiskAttach):
                if storage_id in disks:
                    raise conflict(f"storage '{storage_id}' is already attached to '{compute_id}'")

            def check() -> Any:
                with self.database.read() as session:
                    self.rules.volumes(session, principal, patch.virtualDiskAttach, "virtualDiskAttach")
                    return self.rules.nics(session, principal, {}, patch.networkInterfaceNew, "networkInterfaceNew")
            new_nics = await asyncio.to_thread(check)
            return await self._apply_update(principal, row, patch, new_nics, nics)

    async def _apply_update(self: ComputeService, principal: Principal, row: ComputeRow, patch: ComputeUpdateRequest,
                            new_nics: list[Any], nics: dict[str, dict[str, Any]]) -> ComputeRow:
        compute_id = row.id
        driver = self.infra.driver
        undo: list[Callable[[], Awaitable[Any]]] = []
        added_nics: list[dict[str, Any]] = []
        added_disks: list[dict[str, Any]] = []
        try:
            for index, nic in enumerate(new_nics):
                port_id = nic.port_id
                created = False
                if port_id is None:
                    port = await self.network.create_port(principal, VirtualNetworkPortData(
                        networkId=nic.network_id, macAddress=nic.mac_address, fixedIps=nic.fixed_ips(),
                        bandwidth=nic.bandwidth, resourceGroupId=row.resource_group_id,
                        networkResourceName=f"{row.body.get('computeName') or compute_id}-nic{len(nics) + index}"))
                    port_id, created = port.id, True
                    undo.append(lambda p=port_id: self._delete_port(p))
                await asyncio.to_thread(self.network.attach, port_id, compute_id)
                undo.append(lambda p=port_id: asyncio.to_thread(self.network.detach, p, compute_id))
                await driver.plug_port(port_id, compute_id)
                undo.append(lambda p=port_id: driver.unplug_port(p, compute_id))
                _spec, document = await asyncio.to_thread(self._port_wiring, port_id)
                document.update(ownerId=compute_id, typeVirtualNic=nic.vnic_type, portCreatedByVim=created,
                                metadata=dict(nic.metadata))
                added_nics.append(document)
            for storage_id in patch.virtualDiskAttach:
                volume = await self.storage.attach(principal, storage_id, compute_id, row.body.get("hostId"))
                undo.append(lambda s=storage_id: self.storage.detach(principal, s, compute_id))
                added_disks.append(disk_document(volume.body, compute_id))
            for storage_id in patch.virtualDiskDetach:
                await self.storage.detach(principal, storage_id, compute_id)
                undo.append(lambda s=storage_id: self.storage.attach(principal, s, compute_id, row.body.get("hostId")))
            for nic_id in patch.networkInterfaceDelete:
                nic = nics[nic_id]
                port_id = nic.get("networkPortId") or nic_id
                await driver.unplug_port(port_id, compute_id)
                undo.append(lambda p=port_id: driver.plug_port(p, compute_id))
                await asyncio.to_thread(self.network.detach, port_id, compute_id)
                undo.append(lambda p=port_id: asyncio.to_thread(self.network.attach, p, compute_id))
        except Exception as exc:  # noqa: BLE001 - undone, then reported
            for step in reversed(undo):
                try:
                    await step()
                except Exception:  # noqa: BLE001
                    pass
            raise driver_error_of(exc) from exc
        # Ports the VIM created for removed NICs go with them; that cannot be undone, so it is last.
        for nic_id in patch.networkInterfaceDelete:
            if nics[nic_id].get("portCreatedByVim"):
                await self._quietly(self._delete_port(nics[nic_id].get("networkPortId") or nic_id), "delete", nic_id)

        def edit(body: dict[str, Any]) -> dict[str, Any]:
            updates = {c.resourceId: c for c in patch.networkInterfaceUpdate}
            interfaces = []
            for nic in body.get("virtualNetworkInterface") or []:
                if nic["resourceId"] in patch.networkInterfaceDelete:
                    continue
                change = updates.get(nic["resourceId"])
                if change is not None:
                    nic = dict(nic)
                    if change.metadata is not None:
                        nic["metadata"] = merge_metadata(nic.get("metadata"), change.metadata,
                                                         "networkInterfaceUpdate/metadata")
                    if change.bandwidth is not None:
                        nic["bandwidth"] = change.bandwidth
                    if change.operationalState is not None:
                        nic["operationalState"] = change.operationalState.value
                interfaces.append(nic)
            body["virtualNetworkInterface"] = interfaces + added_nics
            body["virtualDisks"] = [d for d in body.get("virtualDisks") or []
                                    if d["storageId"] not in patch.virtualDiskDetach] + added_disks
            if patch.metadata is not None:
                body["metadata"] = merge_metadata(body.get("metadata"), patch.metadata)
            return body

        return await asyncio.to_thread(self.change, principal, compute_id, edit, "MODIFIED")

    # ------------------------------------------------------------------ affinity groups

    def create_group(self: ComputeService, principal: Principal, data: ComputeAffinityGroupCreate) -> ComputeAffinityGroupRow:
        group_id = str(uuid.uuid4())
        body = data.model_dump(mode="json", exclude_none=True)
        body.update(groupId=group_id, resourceGroupId=principal.resource_group_id)
        now = utcnow()
        row = ComputeAffinityGroupRow(id=group_id, resource_group_id=principal.resource_group_id, created_at=now,
                                      updated_at=now, version=1, body=body)
        with self.database.write() as session:
            session.add(row)
        return row

    def group_document(self: ComputeService, row: ComputeAffinityGroupRow) -> dict[str, Any]:
        return {**row.body, "members": sorted(self.infra.placement.group_members(row.id))}

    def get_group(self: ComputeService, principal: Principal, group_id: str) -> ComputeAffinityGroupRow:
        with self.database.read() as session:
            row = get_document(session, ComputeAffinityGroupRow, group_id, visibility_of(principal))
        if row is None:
            raise not_found("compute affinity group", group_id)
        return row

    def list_groups(self: ComputeService, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None
                    ) -> Page[ComputeAffinityGroupRow]:
        with self.database.read() as session:
            return list_documents(session, ComputeAffinityGroupRow, visibility_of(principal), page, where)

    def delete_group(self: ComputeService, principal: Principal, group_id: str, if_match: str | None) -> None:
        with self.database.write() as session:
            row = get_document(session, ComputeAffinityGroupRow, group_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("compute affinity group", group_id)
            check_if_match(if_match, row)
            if self.infra.placement.group_members(group_id):
                raise conflict(f"compute affinity group '{group_id}' still has computes")
            session.delete(row)

    # ------------------------------------------------------------------ information

    def resource_types(self: ComputeService, zone_id: str | None = None) -> list[dict[str, Any]]:
        """VirtualComputeResourceInformation: one entry per kind of host (CPU architecture and
        traits), with the largest compute a single host of that kind can take now."""
        inventory = self.infra.inventory
        if zone_id is not None and not any(zone.zoneId == zone_id for zone in inventory.zones):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        kinds: dict[str, dict[str, Any]] = {}
        for host in inventory.hosts:
            if zone_id is not None and host.zoneId != zone_id:
                continue
            host_view = host.model_dump(mode="json")
            arch = str(host_view.get("cpuArchitecture") or "x86_64")
            traits = sorted(host_view.get("traits") or [])
            type_id = "-".join([arch, *traits]) if traits else arch
            usage = self.infra.placement.host_usage(host.hostId)
            entry = kinds.setdefault(type_id, {
                "computeResourceTypeId": type_id,
                "virtualCPU": {"cpuArchitecture": arch, "numVirtualCpu": 0,
                               "cpuClock": host_view.get("cpuClockMhz")},
                "virtualMemory": {"virtualMemSize": 0, "numaSupported": True},
                "accelerationCapability": traits, "zoneIds": [], "hosts": 0,
            })
            if host.zoneId not in entry["zoneIds"]:
                entry["zoneIds"].append(host.zoneId)
            if usage.schedulable:
                entry["hosts"] += 1
                entry["virtualCPU"]["numVirtualCpu"] = max(entry["virtualCPU"]["numVirtualCpu"],
                                                           usage.vcpus_total - usage.vcpus_used)
                entry["virtualMemory"]["virtualMemSize"] = max(entry["virtualMemory"]["virtualMemSize"],
                                                               usage.memory_mb_total - usage.memory_mb_used)
        return sorted(kinds.values(), key=lambda k: k["computeResourceTypeId"])


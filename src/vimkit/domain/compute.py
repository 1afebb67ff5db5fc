"""Virtualised compute resources (IFA 005 7.3): allocate, query, terminate, recover (docs/compute.md).

Long-running work follows rest-binding.md §1.5. A request validates everything it can up front
(flavour, image, groups, networks, ports, volumes), claims capacity atomically in the placement
engine, and commits the compute as ``ALLOCATING`` with its claim; the answer is ``201`` at once.
A background task then realises the parts in order — ports created and plugged, volumes
recorded as attached, the compute created by the driver with those volumes — and commits
``ALLOCATED`` with the ADDED change notification. If any step fails, every part done so far is
undone (compute deleted, volumes detached, ports unplugged or deleted, claim released) and the compute ends
``FAILED`` with a typed ``error`` and a FAILED notification: nothing stays allocated.

Tasks on one compute are serialised: while a compute is ``ALLOCATING``, ``UPDATING`` or
``TERMINATING`` another task on it is refused with 409, as Nova refuses an action while a
``task_state`` is set. A task interrupted by a restart is finished by :meth:`recover` at start.

Operate, scale, migrate and update live in :mod:`vimkit.domain.compute_ops`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, bindparam, insert, select, update
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, conflict, not_found, problem_body
from vimkit.auth.principal import Principal
from vimkit.domain.compute_events import ComputeEvents
from vimkit.domain.compute_ops import ComputeOperations
from vimkit.domain.compute_support import (
    NicPlan,
    ComputeRules,
    disk_document,
    driver_error_of,
    flavour_numbers,
    now_text,
    placement_error,
    system_principal,
)
from vimkit.drivers.base import DriverError, DriverErrorCode
from vimkit.drivers.specs import ComputeSpec, FixedIp, NicSpec, Segmentation, UserData, VolumeAttachmentSpec
from vimkit.models.compute import ComputeAllocateRequest, VirtualCompute
from vimkit.models.network import VirtualNetworkPortData
from vimkit.notify.outbox import resource_change
from vimkit.placement.model import Claim, PlacementError, PlacementRequest
from vimkit.store.compute_tables import COMPUTE_METADATA, ComputeRow
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.group_commit import GroupCommit
from vimkit.store.prepared import Prepared
from vimkit.store.network_tables import NetworkRow, PortRow
from vimkit.store.repository import (Page, PageRequest, check_if_match, connection_of, detached, get_document,
                                     list_documents, read_document, utcnow, visibility_of)

log = logging.getLogger("vimkit.compute")

COMPUTE_SCHEMA = FilterSchema.from_model(
    VirtualCompute, ComputeRow.body,
    columns={"computeId": ComputeRow.id, "computeName": ComputeRow.compute_name, "hostId": ComputeRow.host_id,
             "zoneId": ComputeRow.zone_id, "provisioningState": ComputeRow.state},
    map_indexes={("metadata",): COMPUTE_METADATA},
)

_COMPUTES = ComputeRow.__table__
_CURRENT_QUERY = select(_COMPUTES.c.resource_group_id, _COMPUTES.c.created_at, _COMPUTES.c.version,
                        _COMPUTES.c.body).where(_COMPUTES.c.id == bindparam("b_id"))
_CURRENT = Prepared(_CURRENT_QUERY)
_CURRENT_LOCKED = Prepared(_CURRENT_QUERY.with_for_update())
_COMPLETE = Prepared(update(_COMPUTES).where(_COMPUTES.c.id == bindparam("b_id")))
_INSERT = Prepared(insert(_COMPUTES))


def _sync_metadata(session: Session, compute_id: str, old: Any, new: Any) -> None:
    """Keep ``compute_metadata`` equal to the body's ``metadata``, in the body's transaction; no
    statement at all when the metadata did not change (the common case)."""
    if old != new:
        COMPUTE_METADATA.replace(connection_of(session), compute_id, old, new)


def _metadata_of(body: dict[str, Any]) -> Any:
    """A copy of a body's metadata, safe from an edit that would change the map in place."""
    metadata = body.get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else metadata


def _changed_columns(body: dict[str, Any], version: int) -> dict[str, Any]:
    """A changed compute's columns: its document and the attributes repeated beside it for filters."""
    return {"body": body, "state": body["provisioningState"], "host_id": body.get("hostId"),
            "zone_id": body.get("zoneId"), "compute_name": body.get("computeName"), "version": version + 1,
            "updated_at": utcnow()}


# The indexed columns that repeat an attribute of the body, for filters.
_MIRRORED = {"state": "provisioningState", "host_id": "hostId", "zone_id": "zoneId", "compute_name": "computeName"}


def _columns_to_write(values: dict[str, Any], old_body: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the mirrored columns whose attribute the change left as it was: SQLite
    rewrites the index entry of every column an UPDATE sets, even to its own value (an
    allocation's completion cost 74 µs with all four set, 38–48 µs with only the state)."""
    return {name: value for name, value in values.items()
            if name not in _MIRRORED or value != old_body.get(_MIRRORED[name])}


@dataclass
class AllocationPlan:
    """What an allocation will do, decided and validated before anything is claimed."""

    compute_id: str
    group: str
    flavour: dict[str, Any]
    request: PlacementRequest
    nics: list[NicPlan]
    storage_ids: list[str]
    data: ComputeAllocateRequest
    body: dict[str, Any] = field(default_factory=dict)


class ComputeService(ComputeOperations, ComputeEvents):
    def __init__(self, database: Database, infrastructure: Any, flavours: Any, network: Any, storage: Any,
                 vim_id: str = "vimkit") -> None:
        self.database = database
        self.infra = infrastructure
        self.flavours = flavours
        self.network = network
        self.storage = storage
        self.vim_id = vim_id
        self.rules = ComputeRules(database, infrastructure)
        self.commits = GroupCommit(database)
        self.alarms: Any = None  # the AlarmService, when fault management runs
        self.stuck_after = 600.0  # seconds after which a running task raises an alarm
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stuck_tasks: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}  # per compute: request-time checks and decisions
        infrastructure.add_event_listener(self.handle_event)
        infrastructure.add_admin_listener(self.handle_admin_state)

    # ------------------------------------------------------------------ tasks

    def spawn(self, compute_id: str, work: Coroutine[Any, Any, Any], operation: str = "ALLOCATE") -> asyncio.Task[Any]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(work, name=f"compute-{compute_id}")
        self._tasks[compute_id] = task
        watchdog = loop.call_later(self.stuck_after, self._stuck, compute_id, operation)

        def done(finished: asyncio.Task[Any]) -> None:
            watchdog.cancel()
            if self.alarms is not None and compute_id in self._stuck_tasks:
                self._stuck_tasks.discard(compute_id)
                loop.create_task(asyncio.to_thread(self._clear_alarm, compute_id, "transitionTimeout"))
            if self._tasks.get(compute_id) is finished:
                del self._tasks[compute_id]
            if not finished.cancelled() and finished.exception() is not None:
                error = finished.exception()
                if not isinstance(error, ApiError):
                    log.error("compute task %s failed", compute_id, exc_info=error)

        task.add_done_callback(done)
        return task

    def _stuck(self, compute_id: str, operation: str) -> None:
        if self.alarms is None:
            return
        self._stuck_tasks.add(compute_id)

        def raise_alarm() -> None:
            with self.database.write() as session:
                group = session.scalar(select(ComputeRow.resource_group_id).where(ComputeRow.id == compute_id))
                if group is not None:
                    self.alarms.compute_stuck(session, compute_id, group, operation, self.stuck_after)

        asyncio.get_running_loop().create_task(asyncio.to_thread(raise_alarm))

    def _clear_alarm(self, compute_id: str, probable_cause: str) -> None:
        with self.database.write() as session:
            self.alarms.clear_alarm(session, compute_id, probable_cause)

    async def stop(self) -> None:
        """Let running tasks finish for a moment; what is still running is finished by :meth:`recover`."""
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def wait_for(self, task: asyncio.Task[Any], timeout: float) -> bool:
        """Whether ``task`` finished within ``timeout``; its failure is the caller's to report."""
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    # ------------------------------------------------------------------ notifications and rows

    def notify(self, session: Session, row: ComputeRow, change_type: str, body: dict[str, Any] | None = None) -> None:
        body = body if body is not None else row.body
        resource_change(session, api="compute", resource_type="COMPUTE", resource_id=row.id, change_type=change_type,
                        resource_group_id=row.resource_group_id, vim_id=self.vim_id, changed_resource_data=body,
                        metadata=body.get("metadata") or {})

    @staticmethod
    def save(session: Session, row: ComputeRow, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Apply ``edit`` to a copy of the row's body and store the result (columns, metadata index)."""
        old_metadata = _metadata_of(row.body)
        body = edit(dict(row.body))
        for name, value in _changed_columns(body, row.version).items():
            setattr(row, name, value)
        _sync_metadata(session, row.id, old_metadata, body.get("metadata"))

    def load_row(self, session: Session, principal: Principal | None, compute_id: str, *,
                 for_update: bool = True) -> ComputeRow:
        if principal is None:
            query = select(ComputeRow).where(ComputeRow.id == compute_id)
            row = session.scalar(query.with_for_update() if for_update else query)
        else:
            row = get_document(session, ComputeRow, compute_id, visibility_of(principal), for_update=for_update)
        if row is None:
            raise not_found("compute", compute_id)
        return row

    def change(self, principal: Principal | None, compute_id: str, edit: Callable[[dict[str, Any]], dict[str, Any]],
               change_type: str | None = "MODIFIED", *, if_match: str | None = None,
               expect: Sequence[str] | None = None, claim: Claim | None = None) -> ComputeRow:
        """Read-modify-write of one compute in one transaction, with its notification and claim."""
        with self.database.write() as session:
            return self.change_in(session, principal, compute_id, edit, change_type, if_match=if_match,
                                  expect=expect, claim=claim)

    async def change_soon(self, compute_id: str, edit: Callable[[dict[str, Any]], dict[str, Any]],
                          change_type: str | None = "MODIFIED", *, claim: Claim | None = None) -> ComputeRow:
        """:meth:`change` through the group commit: for the completions many tasks write at once."""
        if claim is None:
            return await self.commits.run(lambda session: self._complete(session, compute_id, edit, change_type),
                                          plain=True, lazy=True)
        return await self.commits.run(lambda session: self.change_in(session, None, compute_id, edit, change_type,
                                                                      claim=claim))

    def _complete(self, session: Session, compute_id: str, edit: Callable[[dict[str, Any]], dict[str, Any]],
                  change_type: str | None) -> ComputeRow:
        """:meth:`change_in` for a background task's completion, in plain statements (the ORM unit
        of work cost as much as the rest of an allocation's completion)."""
        connection = connection_of(session)
        query = _CURRENT if self.database.dialect == "sqlite" else _CURRENT_LOCKED
        current = query.first(connection, {"b_id": compute_id})
        if current is None:
            raise not_found("compute", compute_id)
        was_crashed = current.body.get("runningState") == "CRASHED"
        old_metadata = _metadata_of(current.body)
        body = edit(dict(current.body))
        values = _changed_columns(body, current.version)
        _COMPLETE.execute(connection, {"b_id": compute_id, **_columns_to_write(values, current.body)})
        _sync_metadata(session, compute_id, old_metadata, body.get("metadata"))
        # An ORM copy of this compute loaded earlier in the same transaction is stale now.
        for instance in list(session.identity_map.values()):
            if isinstance(instance, ComputeRow) and instance.id == compute_id:
                session.expire(instance)
        row = detached(ComputeRow, dict(id=compute_id, resource_group_id=current.resource_group_id,
                                        created_at=current.created_at, **values))
        if was_crashed and body.get("runningState") not in ("CRASHED", None) and self.alarms is not None:
            self.alarms.clear_alarm(session, compute_id, "computeCrashed")
        if change_type is not None:
            self.notify(session, row, change_type)
        return row

    def change_in(self, session: Session, principal: Principal | None, compute_id: str,
                  edit: Callable[[dict[str, Any]], dict[str, Any]], change_type: str | None = "MODIFIED", *,
                  if_match: str | None = None, expect: Sequence[str] | None = None,
                  claim: Claim | None = None) -> ComputeRow:
        row = self.load_row(session, principal, compute_id)
        check_if_match(if_match, row)
        if expect is not None and row.state not in expect:
            raise conflict(f"compute '{compute_id}' is {row.state}")
        was_crashed = row.body.get("runningState") == "CRASHED"
        self.save(session, row, edit)
        if was_crashed and row.body.get("runningState") not in ("CRASHED", None) and self.alarms is not None:
            self.alarms.clear_alarm(session, compute_id, "computeCrashed")
        if claim is not None:
            self.infra.record_claim(session, "compute", compute_id, claim.to_dict())
        if change_type is not None:
            self.notify(session, row, change_type)
        return row

    def get(self, principal: Principal, compute_id: str) -> ComputeRow:
        row = read_document(self.database, ComputeRow, compute_id, visibility_of(principal))
        if row is None:
            raise not_found("compute", compute_id)
        return row

    def list(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None,
             body_text: bool = False) -> Page[Any]:  # plain rows
        with self.database.read() as session:
            return list_documents(session, ComputeRow, visibility_of(principal), page, where, plain=True,
                                  body_text=body_text)

    def group_of(self, compute_id: str) -> str | None:
        with self.database.read() as session:
            return session.scalar(select(ComputeRow.resource_group_id).where(ComputeRow.id == compute_id))

    # ------------------------------------------------------------------ allocate

    def _group_for(self, principal: Principal, requested: str | None) -> str:
        if requested is None or requested == principal.resource_group_id:
            return principal.resource_group_id
        if principal.is_admin:
            return requested
        raise ApiError(403, "resourceGroupId must be your own resource group", cause=Cause.FORBIDDEN,
                       invalid_params=[("resourceGroupId", "not your resource group")])

    def _plan(self, session: Session, principal: Principal, data: ComputeAllocateRequest) -> AllocationPlan:
        group = self._group_for(principal, data.resourceGroupId)
        zone_ids, host_id = self.rules.location(data.locationConstraints, "locationConstraints")
        flavour = self.rules.flavour_in(session, principal, data.computeFlavourId, "computeFlavourId")
        if data.vcImageId is not None:
            self.rules.check_image(session, principal, data.vcImageId)
        affinity = self.rules.affinity(session, principal, data.affinityOrAntiAffinityConstraints,
                                       "affinityOrAntiAffinityConstraints")
        nics = self.rules.nics(session, principal, flavour, data.interfaceData, "interfaceData")
        self.rules.volumes(session, principal, data.storageIds, "storageIds")
        vcpus, memory_mb, disk_gb, arch = flavour_numbers(flavour)
        request = PlacementRequest(vcpus, memory_mb, disk_gb, zone_ids, host_id, arch, frozenset(), affinity, group)
        return AllocationPlan(str(uuid.uuid4()), group, flavour, request, nics, list(dict.fromkeys(data.storageIds)),
                              data)

    def _document(self, plan: AllocationPlan, claim: Claim) -> dict[str, Any]:
        data, flavour = plan.data, plan.flavour
        body: dict[str, Any] = {
            "computeId": plan.compute_id,
            "flavourId": flavour["flavourId"],
            "accelerationCapability": list(flavour.get("accelerationCapability") or []),
            "virtualCpu": dict(flavour["virtualCpu"]),
            "virtualMemory": dict(flavour["virtualMemory"]),
            "virtualNetworkInterface": [nic.supplied_interface(plan.compute_id) for nic in plan.nics
                                        if nic.port_id is not None],
            "virtualDisks": [],
            "zoneId": claim.zone_id,
            "hostId": claim.host_id,
            "operationalState": "DISABLED",
            "metadata": dict(data.metadata),
            "resourceGroupId": plan.group,
            "provisioningState": "ALLOCATING",
            "runningState": "STARTING",
            "snapshots": [],
            "affinityOrAntiAffinityConstraints": [c.model_dump(mode="json", exclude_none=True)
                                                  for c in data.affinityOrAntiAffinityConstraints],
            "createdAt": now_text(),
        }
        for name in ("computeName", "vcImageId", "reservationId"):
            if getattr(data, name) is not None:
                body[name] = getattr(data, name)
        return body

    async def allocate(self, principal: Principal, data: ComputeAllocateRequest) -> tuple[ComputeRow, asyncio.Task[Any]]:
        plans: list[AllocationPlan] = []
        try:
            # Plain statements unless claims are merged and journalled through the ORM (PostgreSQL).
            row, claim = await self.commits.run(lambda session: self._claim_and_insert(session, principal, data, plans),
                                                plain=not self.infra.sync.enabled)
        except PlacementError as exc:
            raise placement_error(exc, "locationConstraints") from exc
        except BaseException:
            if plans:
                self.infra.placement.release(plans[0].compute_id)
            raise
        return row, self.spawn(plans[0].compute_id, self._realise(principal, plans[0], claim))

    def _claim_and_insert(self, session: Session, principal: Principal, data: ComputeAllocateRequest,
                          plans: list[AllocationPlan]) -> tuple[ComputeRow, Claim]:
        """Check, decide and record in one transaction: the request is checked against what the
        transaction sees (flavour, groups, ports, volumes), and on PostgreSQL the decision runs
        under the placement lock (after catching up with the other replicas), so no two replicas
        take the same capacity."""
        plan = self._plan(session, principal, data)
        plans.append(plan)
        self.infra.sync.guard(session)
        claim = self.infra.placement.claim(plan.compute_id, plan.request)
        try:
            plan.body = self._document(plan, claim)
            return self._insert(session, plan, claim), claim
        except BaseException:
            self.infra.placement.release(plan.compute_id)
            raise

    def _insert(self, session: Session, plan: AllocationPlan, claim: Claim) -> ComputeRow:
        now = utcnow()
        body = plan.body
        values = dict(id=plan.compute_id, resource_group_id=plan.group, created_at=now, updated_at=now, version=1,
                      body=body, state="ALLOCATING", host_id=claim.host_id, zone_id=claim.zone_id,
                      compute_name=body.get("computeName"))
        # A plain INSERT: the ORM unit of work cost more than the rest of the transaction.
        _INSERT.execute(connection_of(session), values)
        if body["metadata"]:
            _sync_metadata(session, plan.compute_id, None, body["metadata"])
        self.infra.record_claim(session, "compute", plan.compute_id, claim.to_dict(), new=True)
        return detached(ComputeRow, values)

    async def _realise(self, principal: Principal, plan: AllocationPlan, claim: Claim) -> ComputeRow:
        compute_id = plan.compute_id
        created_ports: list[str] = []
        plugged_ports: list[str] = []
        attached: list[str] = []
        created = False
        try:
            ports = []
            for index, nic in enumerate(plan.nics):
                port_id = nic.port_id
                if port_id is None:
                    port = await self.network.create_port(principal, VirtualNetworkPortData(
                        networkId=nic.network_id, macAddress=nic.mac_address, fixedIps=nic.fixed_ips(),
                        bandwidth=nic.bandwidth, networkResourceName=f"{plan.body.get('computeName') or compute_id}-nic{index}",
                        resourceGroupId=plan.group))
                    port_id = port.id
                    created_ports.append(port_id)
                await self.network.attach_soon(port_id, compute_id)
                plugged_ports.append(port_id)
                ports.append(await self.database.point_read(self._port_wiring, port_id))
            # Volumes given at allocation are recorded as attached first (so no other compute takes
            # them meanwhile), then the compute is created with them, as Nova does: the guest has
            # them from boot, with no hot-plug for it to handle while it is still starting.
            for storage_id in plan.storage_ids:
                await self.storage.attach(principal, storage_id, compute_id, claim.host_id, realise=False)
                attached.append(storage_id)
            vcpus, memory_mb, disk_gb, arch = flavour_numbers(plan.flavour)
            user_data = plan.data.userData
            info = await self.infra.driver.create_compute(ComputeSpec(
                compute_id=compute_id, name=plan.body.get("computeName") or compute_id, host_id=claim.host_id,
                zone_id=claim.zone_id, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
                image_ref=plan.data.vcImageId, cpu_architecture=arch,
                numa=bool(plan.flavour["virtualMemory"].get("numaEnabled")),
                user_data=UserData(user_data.content, user_data.method.value) if user_data else None,
                nics=tuple(spec for spec, _doc in ports), metadata=dict(plan.data.metadata),
                volumes=tuple(VolumeAttachmentSpec(storage_id) for storage_id in plan.storage_ids),
                resource_group_id=plan.group,
            ))
            created = True
            reported = {a.volume_id: a.device for a in info.attachments}
            volumes = await self.storage.record_devices(
                compute_id, {storage_id: reported.get(storage_id) for storage_id in plan.storage_ids})
            disks = [disk_document(volumes[storage_id].body, compute_id) for storage_id in plan.storage_ids]
            interfaces = [doc | {"ownerId": compute_id, "portCreatedByVim": port_id in created_ports}
                          for (_spec, doc), port_id in zip(ports, plugged_ports)]
            for interface, nic in zip(interfaces, plan.nics):
                interface["typeVirtualNic"] = nic.vnic_type
                if nic.metadata:
                    interface["metadata"] = dict(nic.metadata)

            def finish(body: dict[str, Any]) -> dict[str, Any]:
                body.update(virtualNetworkInterface=interfaces, virtualDisks=disks, provisioningState="ALLOCATED",
                            runningState=info.running_state.value, operationalState="ENABLED")
                return body

            return await self.change_soon(compute_id, finish, "ADDED")
        except asyncio.CancelledError:
            raise  # shutting down: recover() finishes the job at the next start
        except Exception as exc:  # noqa: BLE001 - every failure ends in FAILED with everything released
            error = driver_error_of(exc)
            await self._undo(principal, compute_id, created, attached, plugged_ports, created_ports)
            await asyncio.to_thread(self._mark_failed, compute_id, error)
            raise error from exc

    def _port_wiring(self, port_id: str) -> tuple[NicSpec, dict[str, Any]]:
        """What the driver needs to wire a port and how the NIC is shown, from the port and its network."""
        with self.database.read() as session:
            port = session.scalar(select(PortRow).where(PortRow.id == port_id))
            if port is None:
                raise not_found("port", port_id)
            network = session.scalar(select(NetworkRow).where(NetworkRow.id == port.network_id))
        body = port.body
        segmentation = None
        if network is not None:
            segment = network.body.get("segmentationId")
            segmentation = Segmentation(str(network.body.get("networkType", "vlan")).lower(),
                                        int(segment) if segment not in (None, "") else None,
                                        network.body.get("providerNetwork"), int(network.body.get("mtu") or 1500))
        fixed = body.get("fixedIps") or []
        spec = NicSpec(port_id, port.network_id, body["macAddress"],
                       tuple(FixedIp(f["subnetId"], f["ipAddress"]) for f in fixed), segmentation,
                       bandwidth_mbps=body.get("bandwidth"))
        document = {"resourceId": port_id, "networkId": port.network_id, "networkPortId": port_id,
                    "ipAddress": [f["ipAddress"] for f in fixed], "macAddress": body["macAddress"],
                    "operationalState": "ENABLED", "accelerationCapability": [], "metadata": {}}
        if body.get("bandwidth") is not None:
            document["bandwidth"] = body["bandwidth"]
        return spec, document

    async def _undo(self, principal: Principal, compute_id: str, created: bool, attached: Sequence[str],
                    plugged_ports: Sequence[str], created_ports: Sequence[str]) -> None:
        """Give back, in reverse order, whatever a failed task had done; each step is best effort
        and logged, so that one failing undo does not leave the others undone.

        The volumes were booted with the compute: deleting it detaches them in the backend, so only
        their records remain to be dropped (after the deletion, so that no other compute is given
        a volume the backend still holds)."""
        deleted = True
        if created:
            try:
                await self.infra.driver.delete_compute(compute_id)
            except DriverError as exc:
                if exc.code is not DriverErrorCode.NOT_FOUND:
                    deleted = False
                    log.error("could not delete backend compute %s: %s", compute_id, exc.message)
        for storage_id in reversed(attached):
            await self._quietly(self.storage.detach(principal, storage_id, compute_id, realise=not deleted),
                                "detach", storage_id)
        for port_id in reversed(plugged_ports):
            await self._quietly(asyncio.to_thread(self.network.detach, port_id, compute_id), "unplug", port_id)
        for port_id in reversed(created_ports):
            await self._quietly(self._delete_port(port_id), "delete", port_id)
        self.infra.placement.release(compute_id)

    async def _delete_port(self, port_id: str) -> None:
        with self.database.read() as session:
            group = session.scalar(select(PortRow.resource_group_id).where(PortRow.id == port_id))
        if group is not None:
            await self.network.delete(PortRow, system_principal(group), port_id, None)

    @staticmethod
    async def _quietly(call: Coroutine[Any, Any, Any], action: str, target: str) -> None:
        try:
            await call
        except ApiError as exc:
            if exc.status != 404:
                log.error("undo: could not %s %s: %s", action, target, exc.detail)
        except Exception:  # noqa: BLE001
            log.exception("undo: could not %s %s", action, target)

    def _mark_failed(self, compute_id: str, error: ApiError) -> None:
        def fail(body: dict[str, Any]) -> dict[str, Any]:
            body.update(provisioningState="FAILED", operationalState="DISABLED", error=problem_body(error),
                        virtualNetworkInterface=[], virtualDisks=[])
            body.pop("runningState", None)
            return body

        with self.database.write() as session:
            row = session.scalar(select(ComputeRow).where(ComputeRow.id == compute_id).with_for_update())
            if row is None:
                return
            self.save(session, row, fail)
            self.infra.forget_claim(session, compute_id)
            self.notify(session, row, "FAILED")

    # ------------------------------------------------------------------ terminate

    async def delete(self, principal: Principal, compute_id: str, if_match: str | None
                     ) -> tuple[ComputeRow, asyncio.Task[Any]]:
        def begin(body: dict[str, Any]) -> dict[str, Any]:
            body["provisioningState"] = "TERMINATING"
            return body

        async with self._lock(compute_id):  # not in the middle of an Update of the same compute
            row = await asyncio.to_thread(self.change, principal, compute_id, begin, None, if_match=if_match,
                                          expect=("ALLOCATED", "FAILED"))
        return row, self.spawn(compute_id, self._terminate(row), "TERMINATE")

    async def _terminate(self, row: ComputeRow) -> None:
        compute_id = row.id
        principal = system_principal(row.resource_group_id)
        try:
            await self.infra.driver.delete_compute(compute_id)
        except DriverError as exc:
            if exc.code is not DriverErrorCode.NOT_FOUND:
                error = driver_error_of(exc)

                def back(body: dict[str, Any]) -> dict[str, Any]:
                    body["provisioningState"] = row.body["provisioningState"]
                    body["lastOperation"] = {"operation": "TERMINATE", "status": "FAILED", "startedAt": now_text(),
                                             "finishedAt": now_text(), "error": problem_body(error)}
                    return body

                await asyncio.to_thread(self.change, None, compute_id, back, "MODIFIED")
                raise error from exc
        for disk in row.body.get("virtualDisks") or []:
            await self._quietly(self.storage.detach(principal, disk["storageId"], compute_id, realise=False),
                                "detach", disk["storageId"])
        for nic in row.body.get("virtualNetworkInterface") or []:
            port_id = nic.get("networkPortId")
            if not port_id:
                continue
            await self._quietly(asyncio.to_thread(self.network.detach, port_id, compute_id), "unplug", port_id)
            if nic.get("portCreatedByVim"):
                await self._quietly(self._delete_port(port_id), "delete", port_id)
        await asyncio.to_thread(self._remove, compute_id)
        self.infra.placement.release(compute_id)
        self._locks.pop(compute_id, None)

    def _remove(self, compute_id: str) -> None:
        with self.database.write() as session:
            row = session.scalar(select(ComputeRow).where(ComputeRow.id == compute_id).with_for_update())
            if row is None:
                return
            self.notify(session, row, "REMOVED")
            self.infra.forget_claim(session, compute_id)
            if self.alarms is not None:
                self.alarms.clear_all(session, compute_id)
            session.delete(row)

    async def terminate(self, principal: Principal, compute_ids: list[str], timeout: float = 60.0) -> list[str]:
        """Best effort: start every termination, then report the ids whose termination finished."""
        started: list[tuple[str, asyncio.Task[Any]]] = []
        for compute_id in dict.fromkeys(compute_ids):
            try:
                _row, task = await self.delete(principal, compute_id, None)
            except ApiError as exc:
                log.info("terminate: %s not terminated: %s", compute_id, exc.detail)
                continue
            started.append((compute_id, task))
        if started:
            await asyncio.wait([task for _id, task in started], timeout=timeout)
        return [compute_id for compute_id, task in started
                if task.done() and not task.cancelled() and task.exception() is None]

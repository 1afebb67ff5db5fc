"""Virtualised storage resources (IFA 005 7.5): volumes, snapshots, attachments, affinity groups.

Every change follows one pattern (docs/storage.md):

1. capacity is claimed in memory with :class:`StoragePlacementState` (atomic; never beyond a pool's
   ``capacityGb × allocationRatio``, also under concurrent requests);
2. the driver realises the change (the simulated driver is fast, so the call runs inside the
   request and the answer carries the final state);
3. one database transaction writes the volume document, its persisted claim and the change
   notification.

If step 2 or 3 fails, the claim is released (or restored) and a created backend volume deleted:
nothing is left half-created. Operations on one volume are serialised by a per-volume lock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, insert, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, conflict, invalid, not_found, problem_body
from vimkit.auth.principal import Principal
from vimkit.drivers.base import DriverError, DriverErrorCode, DriverEvent, EventKind, FaultKind, ObjectType
from vimkit.drivers.specs import VolumeSpec
from vimkit.domain.affinity import resolve_rules
from vimkit.domain.infrastructure import driver_error
from vimkit.domain.metadata import merge_metadata
from vimkit.models.storage import (
    AffinityOrAntiAffinityConstraint,
    StorageAffinityGroup,
    StorageAffinityGroupCreate,
    StorageAllocateRequest,
    StorageMigrateRequest,
    StorageOperateRequest,
    StorageOperation,
    StorageUpdateRequest,
    VirtualStorage,
)
from vimkit.notify.outbox import information_change, resource_change
from vimkit.placement.model import (
    AffinityRule,
    AffinityUnsatisfiable,
    ClaimConflict,
    NoValidHost,
    PlacementError,
    UnknownZone,
)
from vimkit.placement.storage import StorageClaim, StorageRequest
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.group_commit import GroupCommit
from vimkit.store.repository import (
    Page,
    PageRequest,
    check_if_match,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
)
from vimkit.store.storage_tables import StorageAffinityGroupRow, StorageRow, StorageSnapshotRow

log = logging.getLogger("vimkit.storage")
T = TypeVar("T")

STORAGE_SCHEMA = FilterSchema.from_model(VirtualStorage, StorageRow.body, columns={"storageId": StorageRow.id})
AFFINITY_GROUP_SCHEMA = FilterSchema.from_model(
    StorageAffinityGroup, StorageAffinityGroupRow.body, columns={"groupId": StorageAffinityGroupRow.id}
)


def placement_error(exc: PlacementError) -> ApiError:
    """NO_CAPACITY / AFFINITY_UNSATISFIABLE (409) for the engine's refusals."""
    if isinstance(exc, AffinityUnsatisfiable):
        return conflict(exc.reason, Cause.AFFINITY_UNSATISFIABLE)
    if isinstance(exc, NoValidHost):
        return conflict(exc.reason, Cause.NO_CAPACITY)
    if isinstance(exc, UnknownZone):
        return invalid("locationConstraints/zoneId", exc.reason)
    return conflict(exc.reason)


def _now_text() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def _attachment_owner(body: dict[str, Any]) -> None:
    attachments = body.get("attachments") or []
    if attachments:
        body["ownerId"] = attachments[0]["computeId"]
    else:
        body.pop("ownerId", None)


_INSERT = insert(StorageRow.__table__)


class StorageService:
    def __init__(self, database: Database, infrastructure: Any, vim_id: str = "vimkit") -> None:
        self.database = database
        self.infra = infrastructure
        self.vim_id = vim_id
        self._locks: dict[str, asyncio.Lock] = {}
        self.commits = GroupCommit(database)
        infrastructure.add_event_listener(self.handle_event)
        # Pools failed before a restart stay out of placement (the simulator persists its faults).
        faults = getattr(infrastructure.driver, "faults", None)
        pools = {pool.poolId for pool in infrastructure.inventory.storagePools}
        for fault in faults() if callable(faults) else ():
            if fault.kind is FaultKind.STORAGE_FAILURE and fault.target_id in pools:
                infrastructure.storage.pool_down(fault.target_id)

    # ------------------------------------------------------------------ helpers

    def _lock(self, volume_id: str) -> asyncio.Lock:
        lock = self._locks.get(volume_id)
        if lock is None:
            lock = self._locks[volume_id] = asyncio.Lock()
        return lock

    async def _driver(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except DriverError as exc:
            raise driver_error(exc) from exc

    def _notify(self, session: Session, row: StorageRow, change_type: str) -> None:
        resource_change(
            session,
            api="storage",
            resource_type="STORAGE",
            resource_id=row.id,
            change_type=change_type,
            resource_group_id=row.resource_group_id,
            vim_id=self.vim_id,
            changed_resource_data=row.body,
            metadata=row.body.get("metadata") or {},
        )

    def _group_for(self, principal: Principal, requested: str | None) -> str:
        if requested is None or requested == principal.resource_group_id:
            return principal.resource_group_id
        if principal.is_admin:
            return requested
        raise ApiError(403, "resourceGroupId must be your own resource group", cause=Cause.FORBIDDEN,
                       invalid_params=[("resourceGroupId", "not your resource group")])

    def _save(self, session: Session, row: StorageRow, body: dict[str, Any]) -> None:
        _attachment_owner(body)
        row.body = body
        row.version += 1
        row.updated_at = utcnow()

    def _load(self, session: Session, principal: Principal, volume_id: str, if_match: str | None = None,
              *, for_update: bool = True) -> StorageRow:
        row = get_document(session, StorageRow, volume_id, visibility_of(principal), for_update=for_update)
        if row is None:
            raise not_found("storage", volume_id)
        check_if_match(if_match, row)
        return row

    def _read(self, principal: Principal, volume_id: str, if_match: str | None = None) -> StorageRow:
        with self.database.read() as session:
            return self._load(session, principal, volume_id, if_match, for_update=False)

    @staticmethod
    def _usable(row: StorageRow, action: str) -> None:
        state = row.body.get("provisioningState")
        if state != "ALLOCATED":
            raise conflict(f"cannot {action} storage '{row.id}' while it is {state}")

    # ------------------------------------------------------------------ affinity rules

    def _rules(self, principal: Principal, constraints: list[AffinityOrAntiAffinityConstraint]) -> tuple[AffinityRule, ...]:
        with self.database.read() as session:
            return resolve_rules(session, visibility_of(principal), constraints, "affinityOrAntiAffinityConstraints",
                                 StorageAffinityGroupRow, StorageRow, "storage")

    # ------------------------------------------------------------------ allocate

    def _check_location(self, data: StorageAllocateRequest) -> tuple[frozenset[str] | None, str | None]:
        inventory = self.infra.inventory
        location = data.locationConstraints
        zone_ids = pool_id = None
        if location is not None and location.zoneId is not None:
            if not any(zone.zoneId == location.zoneId for zone in inventory.zones):
                raise invalid("locationConstraints/zoneId", f"zone '{location.zoneId}' does not exist")
            zone_ids = frozenset({location.zoneId})
        if location is not None and location.poolId is not None:
            if not any(pool.poolId == location.poolId for pool in inventory.storagePools):
                raise invalid("locationConstraints/poolId", f"storage pool '{location.poolId}' does not exist")
            pool_id = location.poolId
        kind = data.storageData.typeOfStorage
        if not any(pool.typeOfStorage == kind for pool in inventory.storagePools):
            raise invalid("storageData/typeOfStorage", f"storage type '{kind}' is not offered")
        return zone_ids, pool_id

    def _source_snapshot(self, principal: Principal, data: StorageAllocateRequest) -> dict[str, Any] | None:
        if data.sourceSnapshotId is None:
            return None
        with self.database.read() as session:
            snapshot = get_document(session, StorageSnapshotRow, data.sourceSnapshotId, visibility_of(principal))
        if snapshot is None:
            raise invalid("sourceSnapshotId", f"snapshot '{data.sourceSnapshotId}' does not exist")
        if data.storageData.sizeOfStorage < snapshot.body["sizeOfStorage"]:
            raise invalid("storageData/sizeOfStorage",
                          f"must be at least {snapshot.body['sizeOfStorage']} GB, the size of the snapshot")
        return snapshot.body

    async def allocate(self, principal: Principal, data: StorageAllocateRequest) -> StorageRow:
        group = self._group_for(principal, data.resourceGroupId)
        zone_ids, pool_id = self._check_location(data)
        # Each step a worker-thread trip only when it has something to read.
        rules = (await asyncio.to_thread(self._rules, principal, data.affinityOrAntiAffinityConstraints)
                 if data.affinityOrAntiAffinityConstraints else ())
        snapshot = (await asyncio.to_thread(self._source_snapshot, principal, data)
                    if data.sourceSnapshotId is not None else None)
        volume_id = str(uuid.uuid4())
        storage = data.storageData
        request = StorageRequest(storage.sizeOfStorage, storage.typeOfStorage, zone_ids, pool_id,
                                 bool(storage.rdmaEnabled), storage.multiAttach, rules, group)
        try:
            claim = await self.infra.decide_async("storage", volume_id,
                                                  lambda: self.infra.storage.claim(volume_id, request))
        except PlacementError as exc:
            raise placement_error(exc) from exc
        created = False
        try:
            await self._driver(self.infra.driver.create_volume(VolumeSpec(
                volume_id=volume_id, name=data.storageName or volume_id, size_gb=storage.sizeOfStorage,
                pool_id=claim.pool_id, zone_id=claim.zone_id, type_of_storage=storage.typeOfStorage,
                rdma_enabled=bool(storage.rdmaEnabled), multi_attach=storage.multiAttach,
                image_ref=f"snapshot:{snapshot['snapshotId']}" if snapshot else None, metadata=dict(data.metadata),
            )))
            created = True
            body = self._document(volume_id, group, data, claim, snapshot)
            return await self.commits.run(lambda session: self._insert(session, volume_id, group, body, claim))
        except BaseException:
            self.infra.storage.release(volume_id)
            if self.infra.sync.enabled:
                await asyncio.to_thread(self.infra.persist_claim, "storage", volume_id)
            if created:
                try:
                    await self.infra.driver.delete_volume(volume_id)
                except Exception:  # noqa: BLE001 - reported, the original error is what the client sees
                    log.exception("could not delete backend volume %s of a failed allocation", volume_id)
            raise

    def _document(self, volume_id: str, group: str, data: StorageAllocateRequest, claim: StorageClaim,
                  snapshot: dict[str, Any] | None) -> dict[str, Any]:
        storage = data.storageData
        body: dict[str, Any] = {
            "storageId": volume_id,
            "typeOfStorage": storage.typeOfStorage,
            "sizeOfStorage": storage.sizeOfStorage,
            "rdmaEnabled": bool(storage.rdmaEnabled),
            "zoneId": claim.zone_id,
            "operationalState": "ENABLED",
            "metadata": dict(data.metadata),
            "resourceGroupId": group,
            "provisioningState": "ALLOCATED",
            "poolId": claim.pool_id,
            "multiAttach": storage.multiAttach,
            "attachments": [],
            "snapshots": [],
            "affinityOrAntiAffinityConstraints": [
                c.model_dump(mode="json", exclude_none=True) for c in data.affinityOrAntiAffinityConstraints
            ],
            "createdAt": _now_text(),
        }
        if data.storageName is not None:
            body["storageName"] = data.storageName
        if data.reservationId is not None:
            body["reservationId"] = data.reservationId
        if snapshot is not None:
            body["sourceSnapshotId"] = snapshot["snapshotId"]
        return body

    def _insert(self, session: Session, volume_id: str, group: str, body: dict[str, Any],
                claim: StorageClaim) -> StorageRow:
        """The volume, its claim and its ADDED notification, in a group commit with other writes."""
        now = utcnow()
        values = dict(id=volume_id, resource_group_id=group, created_at=now, updated_at=now, version=1, body=body)
        session.connection().execute(_INSERT, [values])
        self.infra.record_claim(session, "storage", volume_id, claim.to_dict(), new=True)
        row = StorageRow(**values)
        self._notify(session, row, "ADDED")
        return row

    # ------------------------------------------------------------------ query

    def group_of(self, volume_id: str) -> str | None:
        """The resource group owning a volume (for alarms raised by the infrastructure)."""
        with self.database.read() as session:
            return session.scalar(select(StorageRow.resource_group_id).where(StorageRow.id == volume_id))

    def get(self, principal: Principal, volume_id: str) -> StorageRow:
        return self._read(principal, volume_id)

    def list(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None) -> Page[Any]:  # plain rows
        with self.database.read() as session:
            return list_documents(session, StorageRow, visibility_of(principal), page, where, plain=True)

    # ------------------------------------------------------------------ update / scale / migrate

    async def update(self, principal: Principal, volume_id: str, patch: StorageUpdateRequest,
                     if_match: str | None) -> StorageRow:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id, if_match)
            body = dict(row.body)
            data = patch.updateStorageData
            new_size = None
            if data is not None:
                for name in ("typeOfStorage", "rdmaEnabled", "multiAttach"):
                    value = getattr(data, name)
                    if value is not None and value != body.get(name):
                        raise invalid(f"updateStorageData/{name}", "cannot be changed (migrate or allocate a new volume)")
                if data.sizeOfStorage is not None and data.sizeOfStorage != body["sizeOfStorage"]:
                    new_size = data.sizeOfStorage
            if new_size is not None:
                row = await self._grow(principal, row, new_size, "updateStorageData/sizeOfStorage")
                body = dict(row.body)
            fields = patch.model_fields_set

            def apply(body: dict[str, Any]) -> dict[str, Any]:
                body = dict(body)
                if "storageName" in fields:
                    if patch.storageName is None:
                        body.pop("storageName", None)
                    else:
                        body["storageName"] = patch.storageName
                if patch.metadata is not None:
                    body["metadata"] = merge_metadata(body.get("metadata"), patch.metadata)
                return body

            if "storageName" not in fields and patch.metadata is None:
                return row
            return await asyncio.to_thread(self._modify, principal, volume_id, apply)

    def _modify(self, principal: Principal | None, volume_id: str, change: Callable[[dict[str, Any]], dict[str, Any]],
                claim: StorageClaim | None = None, change_type: str = "MODIFIED") -> StorageRow:
        with self.database.write() as session:
            return self._modify_in(session, principal, volume_id, change, claim, change_type)

    def _modify_in(self, session: Session, principal: Principal | None, volume_id: str,
                   change: Callable[[dict[str, Any]], dict[str, Any]], claim: StorageClaim | None = None,
                   change_type: str = "MODIFIED") -> StorageRow:
        if principal is None:
            row = session.scalar(select(StorageRow).where(StorageRow.id == volume_id).with_for_update())
            if row is None:
                raise not_found("storage", volume_id)
        else:
            row = self._load(session, principal, volume_id)
        self._save(session, row, change(dict(row.body)))
        if claim is not None:
            self.infra.record_claim(session, "storage", volume_id, claim.to_dict())
        self._notify(session, row, change_type)
        return row

    async def scale(self, principal: Principal, volume_id: str, size_gb: int, if_match: str | None) -> StorageRow:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id, if_match)
            return await self._grow(principal, row, size_gb, "sizeOfStorage")

    async def _grow(self, principal: Principal, row: StorageRow, size_gb: int, name: str) -> StorageRow:
        current = int(row.body["sizeOfStorage"])
        if size_gb <= current:
            raise invalid(name, f"a volume can only grow: {size_gb} GB is not more than its {current} GB")
        self._usable(row, "scale")
        try:
            claim = await self.infra.decide_async("storage", row.id, lambda: self.infra.storage.resize(row.id, size_gb))
        except PlacementError as exc:
            raise placement_error(exc) from exc
        try:
            await self._driver(self.infra.driver.extend_volume(row.id, size_gb))

            def change(body: dict[str, Any]) -> dict[str, Any]:
                body["sizeOfStorage"] = size_gb
                return body

            return await asyncio.to_thread(self._modify, principal, row.id, change, claim)
        except BaseException:
            self.infra.storage.resize(row.id, current)
            if self.infra.sync.enabled:
                await asyncio.to_thread(self.infra.persist_claim, "storage", row.id)
            raise

    async def migrate(self, principal: Principal, volume_id: str, data: StorageMigrateRequest,
                      if_match: str | None) -> StorageRow:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id, if_match)
            self._usable(row, "migrate")
            if row.body.get("attachments"):
                raise conflict(f"storage '{volume_id}' is attached; detach it before migrating")
            constraint = data.migrationConstraint
            zone_ids = None
            pool_id = None
            if constraint is not None and constraint.zoneId is not None:
                if not any(zone.zoneId == constraint.zoneId for zone in self.infra.inventory.zones):
                    raise invalid("migrationConstraint/zoneId", f"zone '{constraint.zoneId}' does not exist")
                zone_ids = [constraint.zoneId]
            if constraint is not None and constraint.poolId is not None:
                if not any(pool.poolId == constraint.poolId for pool in self.infra.inventory.storagePools):
                    raise invalid("migrationConstraint/poolId", f"storage pool '{constraint.poolId}' does not exist")
                if constraint.poolId == row.body.get("poolId"):
                    raise conflict(f"storage '{volume_id}' is already in pool {constraint.poolId}")
                pool_id = constraint.poolId
            try:
                moved = await self.infra.decide_async("storage", volume_id,
                                                      lambda: self.infra.storage.move(volume_id, zone_ids, pool_id))
            except (NoValidHost, AffinityUnsatisfiable, ClaimConflict) as exc:
                raise placement_error(exc) from exc
            try:
                await self._driver(self.infra.driver.migrate_volume(volume_id, moved.pool_id))
            except BaseException:
                self.infra.storage.revert_move(volume_id)
                if self.infra.sync.enabled:
                    await asyncio.to_thread(self.infra.persist_claim, "storage", volume_id)
                raise
            # The copy is done: the claim is persisted as confirmed, and confirmed in memory once
            # that is committed; a failed commit moves the copy back and gives the target back.
            source_pool = str(row.body.get("poolId"))
            confirmed = replace(moved, source_pool_id=None, source_size_gb=0)

            def change(body: dict[str, Any]) -> dict[str, Any]:
                body["poolId"] = confirmed.pool_id
                body["zoneId"] = confirmed.zone_id
                return body

            try:
                updated = await asyncio.to_thread(self._modify, principal, volume_id, change, confirmed)
            except BaseException:
                try:
                    await self.infra.driver.migrate_volume(volume_id, source_pool)
                except Exception:  # noqa: BLE001 - reported; the original error is what the client sees
                    log.exception("could not move volume %s back to %s", volume_id, source_pool)
                self.infra.storage.revert_move(volume_id)
                if self.infra.sync.enabled:
                    await asyncio.to_thread(self.infra.persist_claim, "storage", volume_id)
                raise
            self.infra.storage.confirm_move(volume_id)
            return updated

    # ------------------------------------------------------------------ operate (snapshots)

    async def operate(self, principal: Principal, volume_id: str, data: StorageOperateRequest,
                      if_match: str | None) -> tuple[StorageRow, dict[str, Any]]:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id, if_match)
            if data.storageOperation is StorageOperation.CREATE_SNAPSHOT:
                return await self._create_snapshot(principal, row, data.storageOperationInputData)
            return await self._delete_snapshot(principal, row, data.storageOperationInputData)

    async def _create_snapshot(self, principal: Principal, row: StorageRow, data: dict[str, str]
                               ) -> tuple[StorageRow, dict[str, Any]]:
        self._usable(row, "snapshot")
        snapshot_id = str(uuid.uuid4())
        info = await self._driver(self.infra.driver.snapshot_volume(row.id, snapshot_id))
        snapshot = {
            "snapshotId": snapshot_id,
            "sourceStorageId": row.id,
            "sizeOfStorage": int(row.body["sizeOfStorage"]),
            "usedGb": info.size_gb,
            "typeOfStorage": row.body["typeOfStorage"],
            "createdAt": info.created_at.isoformat().replace("+00:00", "Z"),
        }
        if data.get("snapshotName"):
            snapshot["snapshotName"] = data["snapshotName"]
        summary = {k: v for k, v in snapshot.items() if k not in ("sourceStorageId", "typeOfStorage")}

        def write() -> StorageRow:
            with self.database.write() as session:
                current = self._load(session, principal, row.id)
                now = utcnow()
                session.add(StorageSnapshotRow(id=snapshot_id, volume_id=row.id, resource_group_id=current.resource_group_id,
                                               created_at=now, updated_at=now, version=1, body=snapshot))
                body = dict(current.body)
                body["snapshots"] = [*body.get("snapshots", []), summary]
                self._save(session, current, body)
                self._notify(session, current, "MODIFIED")
                return current

        try:
            updated = await asyncio.to_thread(write)
        except BaseException:
            try:
                await self.infra.driver.delete_volume_snapshot(snapshot_id)
            except Exception:  # noqa: BLE001
                log.exception("could not delete backend snapshot %s of a failed operation", snapshot_id)
            raise
        return updated, snapshot

    async def _delete_snapshot(self, principal: Principal, row: StorageRow, data: dict[str, str]
                               ) -> tuple[StorageRow, dict[str, Any]]:
        snapshot_id = data.get("snapshotId")
        name = "storageOperationInputData/snapshotId"
        if not snapshot_id:
            raise invalid(name, "required for DELETE_SNAPSHOT")
        if not any(s["snapshotId"] == snapshot_id for s in row.body.get("snapshots", [])):
            raise invalid(name, f"storage '{row.id}' has no snapshot '{snapshot_id}'")
        try:
            await self.infra.driver.delete_volume_snapshot(snapshot_id)
        except DriverError as exc:
            if exc.code is not DriverErrorCode.NOT_FOUND:
                raise driver_error(exc) from exc

        def write() -> StorageRow:
            with self.database.write() as session:
                current = self._load(session, principal, row.id)
                snapshot = session.scalar(select(StorageSnapshotRow).where(StorageSnapshotRow.id == snapshot_id))
                if snapshot is not None:
                    session.delete(snapshot)
                body = dict(current.body)
                body["snapshots"] = [s for s in body.get("snapshots", []) if s["snapshotId"] != snapshot_id]
                self._save(session, current, body)
                self._notify(session, current, "MODIFIED")
                return current

        return await asyncio.to_thread(write), {"snapshotId": snapshot_id, "deleted": True}

    # ------------------------------------------------------------------ terminate

    async def delete(self, principal: Principal, volume_id: str, if_match: str | None) -> StorageRow:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id, if_match)
            if row.body.get("attachments"):
                owners = ", ".join(a["computeId"] for a in row.body["attachments"])
                raise conflict(f"storage '{volume_id}' is attached to {owners}; detach it first")
            if row.body.get("snapshots"):
                raise conflict(f"storage '{volume_id}' has snapshots; delete them first (DELETE_SNAPSHOT)")
            try:
                await self.infra.driver.delete_volume(volume_id)
            except DriverError as exc:
                if exc.code is not DriverErrorCode.NOT_FOUND:
                    raise driver_error(exc) from exc

            def write() -> StorageRow:
                with self.database.write() as session:
                    current = self._load(session, principal, volume_id)
                    session.delete(current)
                    self.infra.forget_claim(session, volume_id)
                    self._notify(session, current, "REMOVED")
                    return current

            removed = await asyncio.to_thread(write)
            self.infra.storage.release(volume_id)
        self._locks.pop(volume_id, None)
        return removed

    async def terminate(self, principal: Principal, volume_ids: list[str]) -> list[str]:
        """Best effort: the ids actually terminated, in request order."""
        done = []
        for volume_id in dict.fromkeys(volume_ids):
            try:
                await self.delete(principal, volume_id, None)
            except ApiError as exc:
                log.info("terminate: %s not terminated: %s", volume_id, exc.detail)
                continue
            done.append(volume_id)
        return done

    # ------------------------------------------------------------------ attach / detach (compute service)

    async def attach(self, principal: Principal, volume_id: str, compute_id: str, host_id: str | None = None,
                     *, realise: bool = True) -> StorageRow:
        """Attach a volume to a compute: 409 when it is attached and not multi-attach, or failed.

        ``realise=False`` records an attachment the driver makes itself: ``create_compute`` with
        the volume in its spec, after which :meth:`record_devices` records the guest device.
        """
        async with self._lock(volume_id):
            row = await self.database.point_read(self._read, principal, volume_id)
            self.check_attachable(row, compute_id)
            device = None
            if realise:
                attachment = await self._driver(self.infra.driver.attach_volume(volume_id, compute_id))
                device = attachment.device

            def change(body: dict[str, Any]) -> dict[str, Any]:
                self.check_attachable(StorageRow(id=volume_id, body=body), compute_id)
                entry = {"computeId": compute_id}
                if host_id is not None:
                    entry["hostId"] = host_id
                if device is not None:
                    entry["device"] = device
                body["attachments"] = [*body.get("attachments", []), entry]
                return body

            try:
                # Through the group commit: a cluster's nodes attach their volumes all at once.
                return await self.commits.run(lambda session: self._modify_in(session, principal, volume_id, change))
            except BaseException:
                if realise:
                    try:
                        await self.infra.driver.detach_volume(volume_id, compute_id)
                    except Exception:  # noqa: BLE001
                        log.exception("could not undo the attachment of %s to %s", volume_id, compute_id)
                raise

    async def record_devices(self, compute_id: str, devices: Mapping[str, str | None]) -> dict[str, StorageRow]:
        """Record the guest device the backend gave each volume attached to ``compute_id`` (those
        it was created with; None when it named none), in one transaction; the volumes by id."""
        def record(session: Session) -> dict[str, StorageRow]:
            rows = {}
            for volume_id, device in devices.items():
                if device is None:
                    row = session.scalar(select(StorageRow).where(StorageRow.id == volume_id))
                    if row is None:
                        raise not_found("storage", volume_id)
                    rows[volume_id] = row
                    continue

                def change(body: dict[str, Any], device: str = device) -> dict[str, Any]:
                    body["attachments"] = [a | {"device": device} if a["computeId"] == compute_id else a
                                           for a in body.get("attachments", [])]
                    return body

                rows[volume_id] = self._modify_in(session, None, volume_id, change)
            return rows

        return await self.commits.run(record) if devices else {}

    def check_attachable(self, row: StorageRow, compute_id: str) -> None:
        body = row.body
        self._usable(row, "attach")
        if body.get("operationalState") == "DISABLED":
            raise conflict(f"storage '{row.id}' is DISABLED (failed) and cannot be attached")
        attached = [a["computeId"] for a in body.get("attachments", [])]
        if compute_id in attached:
            raise conflict(f"storage '{row.id}' is already attached to {compute_id}")
        if attached and not body.get("multiAttach"):
            raise conflict(f"storage '{row.id}' is attached to {attached[0]} and is not multi-attach")

    async def detach(self, principal: Principal, volume_id: str, compute_id: str, *, realise: bool = True
                     ) -> StorageRow:
        async with self._lock(volume_id):
            row = await asyncio.to_thread(self._read, principal, volume_id)
            if not any(a["computeId"] == compute_id for a in row.body.get("attachments", [])):
                raise conflict(f"storage '{volume_id}' is not attached to {compute_id}")
            if realise:
                try:
                    await self.infra.driver.detach_volume(volume_id, compute_id)
                except DriverError as exc:
                    if exc.code is not DriverErrorCode.NOT_FOUND:
                        raise driver_error(exc) from exc

            def change(body: dict[str, Any]) -> dict[str, Any]:
                body["attachments"] = [a for a in body.get("attachments", []) if a["computeId"] != compute_id]
                return body

            return await asyncio.to_thread(self._modify, principal, volume_id, change)

    # ------------------------------------------------------------------ driver events

    async def handle_event(self, event: DriverEvent) -> None:
        if event.kind not in (EventKind.VOLUME_FAILED, EventKind.VOLUME_RECOVERED):
            return
        failed = event.kind is EventKind.VOLUME_FAILED
        if event.object_type is ObjectType.STORAGE_POOL:
            try:
                if failed:
                    self.infra.storage.pool_down(event.object_id)
                else:
                    self.infra.storage.pool_up(event.object_id)
            except KeyError:
                return
            await asyncio.to_thread(self._announce_pool, event.object_id)
        elif event.object_type is ObjectType.STORAGE:
            await asyncio.to_thread(self._mark, event, failed)

    def _mark(self, event: DriverEvent, failed: bool) -> None:
        reason = str(event.details.get("reason") or "storage failure")

        def change(body: dict[str, Any]) -> dict[str, Any]:
            if failed:
                body["operationalState"] = "DISABLED"
                error = ApiError(503, f"the volume failed in the infrastructure: {reason}",
                                 cause=Cause.BACKEND_UNAVAILABLE, retryable=True)
                body["error"] = problem_body(error)
            else:
                body["operationalState"] = "ENABLED"
                body.pop("error", None)
            return body

        try:
            self._modify(None, event.object_id, change, change_type="FAILED" if failed else "MODIFIED")
        except ApiError:
            log.info("storage event %s for unknown volume %s", event.kind.value, event.object_id)

    def _announce_pool(self, pool_id: str) -> None:
        pool = next((p for p in self.infra.inventory.storagePools if p.poolId == pool_id), None)
        if pool is None:
            return
        info = next((t for t in self.resource_types() if t["storageResourceTypeId"] == pool.typeOfStorage), None)
        with self.database.write() as session:
            information_change(
                session,
                api="storage-info",
                resource_type_id=pool.typeOfStorage,
                change_type="UPDATE",
                vim_id=self.vim_id,
                changed_resource_data={"storageResourceInformation": info,
                                       "capacity": self.capacity(pool.zoneId, pool.typeOfStorage)},
                audience=None,
            )

    # ------------------------------------------------------------------ information

    def resource_types(self, zone_id: str | None = None) -> list[dict[str, Any]]:
        """VirtualStorageResourceInformation per storage type offered (in ``zone_id`` when given)."""
        inventory = self.infra.inventory
        if zone_id is not None and not any(zone.zoneId == zone_id for zone in inventory.zones):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        usage = {u.pool_id: u for u in self.infra.storage.usage(zone_id)}
        types: dict[str, dict[str, Any]] = {}
        for pool in inventory.storagePools:
            if pool.poolId not in usage:
                continue
            entry = types.setdefault(pool.typeOfStorage, {
                "storageResourceTypeId": pool.typeOfStorage, "typeOfStorage": pool.typeOfStorage,
                "sizeOfStorage": 0, "rdmaSupported": False, "multiAttachSupported": False, "zoneIds": [],
            })
            pool_usage = usage[pool.poolId]
            if pool_usage.up:
                entry["sizeOfStorage"] = max(entry["sizeOfStorage"], pool_usage.free_gb)
            entry["rdmaSupported"] |= pool.rdmaEnabled
            entry["multiAttachSupported"] |= pool.multiAttach
            if pool.zoneId not in entry["zoneIds"]:
                entry["zoneIds"].append(pool.zoneId)
        return sorted(types.values(), key=lambda t: t["storageResourceTypeId"])

    def capacity(self, zone_id: str | None = None, resource_type_id: str | None = None) -> dict[str, Any]:
        inventory = self.infra.inventory
        if zone_id is not None and not any(zone.zoneId == zone_id for zone in inventory.zones):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        if resource_type_id is not None and not any(p.typeOfStorage == resource_type_id for p in inventory.storagePools):
            raise invalid("resourceTypeId", f"storage type '{resource_type_id}' is not offered")
        try:
            view = self.infra.storage.capacity(zone_id, resource_type_id)
            pools, total, allocated = view.pools, view.total_gb, view.allocated_gb
            available, unavailable, largest = view.available_gb, view.unavailable_gb, view.largest_available_gb
        except UnknownZone:  # a zone without pools offers no storage
            pools = total = allocated = available = unavailable = largest = 0
        return {"zoneId": zone_id, "resourceTypeId": resource_type_id, "pools": pools, "totalGb": total,
                "allocatedGb": allocated, "reservedGb": 0, "availableGb": available,
                "unavailableGb": unavailable, "largestAvailableGb": largest}

    # ------------------------------------------------------------------ affinity groups

    def create_group(self, principal: Principal, data: StorageAffinityGroupCreate) -> StorageAffinityGroupRow:
        group_id = str(uuid.uuid4())
        body = data.model_dump(mode="json", exclude_none=True)
        body.update(groupId=group_id, resourceGroupId=principal.resource_group_id)
        now = utcnow()
        row = StorageAffinityGroupRow(id=group_id, resource_group_id=principal.resource_group_id,
                                      created_at=now, updated_at=now, version=1, body=body)
        with self.database.write() as session:
            session.add(row)
        return row

    def get_group(self, principal: Principal, group_id: str) -> StorageAffinityGroupRow:
        with self.database.read() as session:
            row = get_document(session, StorageAffinityGroupRow, group_id, visibility_of(principal))
        if row is None:
            raise not_found("storage affinity group", group_id)
        return row

    def list_groups(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None
                    ) -> Page[StorageAffinityGroupRow]:
        with self.database.read() as session:
            return list_documents(session, StorageAffinityGroupRow, visibility_of(principal), page, where)

    def delete_group(self, principal: Principal, group_id: str, if_match: str | None) -> None:
        with self.database.write() as session:
            row = get_document(session, StorageAffinityGroupRow, group_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("storage affinity group", group_id)
            check_if_match(if_match, row)
            if any(group_id in claim.groups for claim in self.infra.storage.claims()):
                raise conflict(f"storage affinity group '{group_id}' still has volumes")
            session.delete(row)



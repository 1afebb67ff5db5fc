"""The infrastructure behind every resource: inventory, placement state, the driver, faults.

Built once per process from the inventory. Claims made by the compute and storage services are
persisted with their resource (:meth:`record_claim` in the caller's transaction) and replayed at
start, so capacity survives restarts; host admin states and injected faults are persisted here.
Driver events (a host going down, a volume failing …) are turned into state and notifications
here and passed on to the listeners other services register.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, invalid, not_found
from vimkit.drivers.base import DriverError, DriverErrorCode, DriverEvent, EventKind, FaultKind
from vimkit.drivers.sim import SimConfig, SimDriver
from vimkit.infra import Inventory
from vimkit.notify.outbox import information_change
from vimkit.placement import (
    Claim,
    PlacementConfig,
    PlacementState,
    StorageClaim,
    StoragePlacementState,
    UnknownHost,
    UnknownZone,
)
from vimkit.domain.placement_sync import PlacementSync
from vimkit.store.db import Database
from vimkit.store.models import FaultRow, HostStateRow, PlacementClaimRow
from vimkit.store.prepared import Prepared
from vimkit.store.repository import connection_of, utcnow

log = logging.getLogger("vimkit.infrastructure")
EventListener = Callable[[DriverEvent], Awaitable[None]]

_DRIVER_STATUS = {
    DriverErrorCode.NOT_FOUND: (404, Cause.NOT_FOUND),
    DriverErrorCode.CONFLICT: (409, Cause.CONFLICT),
    DriverErrorCode.INVALID_INPUT: (400, Cause.INVALID_INPUT),
    DriverErrorCode.NO_CAPACITY: (409, Cause.NO_CAPACITY),
    DriverErrorCode.HOST_UNAVAILABLE: (503, Cause.BACKEND_UNAVAILABLE),
    DriverErrorCode.BACKEND_UNAVAILABLE: (503, Cause.BACKEND_UNAVAILABLE),
    DriverErrorCode.TIMEOUT: (503, Cause.BACKEND_UNAVAILABLE),
    DriverErrorCode.UNSUPPORTED: (409, Cause.CONFLICT),
    DriverErrorCode.INTERNAL: (500, Cause.INTERNAL),
}


def driver_error(exc: DriverError) -> ApiError:
    """The problem details a client sees for a backend failure."""
    status, cause = _DRIVER_STATUS.get(exc.code, (500, Cause.INTERNAL))
    headers = {"Retry-After": "5"} if status == 503 else None
    return ApiError(status, f"infrastructure: {exc.message}", cause=cause, headers=headers,
                    retryable=exc.retryable or status == 503)


_INSERT_CLAIM = Prepared(insert(PlacementClaimRow.__table__))


class InfrastructureService:
    def __init__(
        self,
        database: Database,
        inventory: Inventory,
        driver: SimDriver,
        vim_id: str,
        placement_config: PlacementConfig | None = None,
    ) -> None:
        self.database = database
        self.inventory = inventory
        self.driver = driver
        self.vim_id = vim_id
        self.placement = PlacementState.from_inventory(inventory, placement_config)
        self.storage = StoragePlacementState.from_inventory(inventory, locator=self.placement.locate)
        self.sync = PlacementSync(database, self.placement, self.storage)
        self._announced: dict[str, dict[str, Any]] = {}  # zone -> capacity last announced
        self._listeners: list[EventListener] = []
        self._admin_listeners: list[Callable[[str, str], None]] = []
        self._events_task: asyncio.Task[None] | None = None
        self._down_hosts: set[str] = set()

    # -- start-up ---------------------------------------------------------------------------
    def load(self) -> None:
        """Replay persisted admin states and claims into the in-memory engines."""
        with self.database.read() as session:
            self.sync.start_from(session)  # before the claims: a change in between is replayed, not lost
            states = list(session.scalars(select(HostStateRow)))
            claims = list(session.scalars(select(PlacementClaimRow)))
        for state in states:
            try:
                self.placement.set_admin_state(state.host_id, state.admin_state)
            except UnknownHost:
                log.warning("host %s has a stored admin state but is not in the inventory", state.host_id)
        self.placement.load(Claim.from_dict(row.claim) for row in claims if row.kind == "compute")
        self.storage.load(StorageClaim.from_dict(row.claim) for row in claims if row.kind == "storage")

    async def start(self) -> None:
        await self.driver.start()
        for fault in self.driver.faults():
            if fault.kind is FaultKind.HOST_DOWN:
                self._host_down(fault.target_id)
        self._events_task = asyncio.create_task(self._consume_events(), name="vimkit-driver-events")

    async def stop(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            await asyncio.gather(self._events_task, return_exceptions=True)
        await self.driver.close()

    # -- claims, for the compute and storage services ---------------------------------------
    def record_claim(self, session: Session, kind: Literal["compute", "storage"], resource_id: str,
                     claim: dict[str, Any], *, new: bool = False) -> None:
        """``new``: the resource has no claim row yet, so an INSERT is enough (``merge`` reads first)."""
        if new and not self.sync.enabled:  # on PostgreSQL the decision may have persisted it already
            _INSERT_CLAIM.execute(connection_of(session), {"resource_id": resource_id, "kind": kind, "claim": claim,
                                                         "created_at": utcnow()})
        else:
            session.merge(PlacementClaimRow(resource_id=resource_id, kind=kind, claim=claim, created_at=utcnow()))
        self.sync.journal(session, kind, resource_id, claim)

    def forget_claim(self, session: Session, resource_id: str) -> None:
        session.execute(delete(PlacementClaimRow).where(PlacementClaimRow.resource_id == resource_id))
        self.sync.journal(session, None, resource_id, None)

    def decide(self, kind: Literal["compute", "storage"], resource_id: str, decision: Callable[[], Any]) -> Any:
        """Run a placement decision (claim, resize, move) so that replicas cannot both take the
        same capacity: on PostgreSQL under the placement lock, after catching up, with the
        resulting claim persisted before the lock is released (see placement_sync.py). On SQLite
        the caller persists the claim with its resource, as before. If the commit fails the
        in-memory decision stands and the caller undoes it, as for any later failure."""
        if not self.sync.enabled:
            return decision()
        with self.database.write() as session:
            self.sync.guard(session)
            claim = decision()
            self.record_claim(session, kind, resource_id, claim.to_dict())
        return claim

    async def decide_async(self, kind: Literal["compute", "storage"], resource_id: str,
                           decision: Callable[[], Any]) -> Any:
        if not self.sync.enabled:
            return decision()
        return await asyncio.to_thread(self.decide, kind, resource_id, decision)

    def persist_claim(self, kind: Literal["compute", "storage"], resource_id: str) -> None:
        """After an in-memory undo on PostgreSQL: write what the claim is now (or its absence)."""
        if not self.sync.enabled:
            return
        current = (self.placement if kind == "compute" else self.storage).get(resource_id)
        with self.database.write() as session:
            if current is None:
                self.forget_claim(session, resource_id)
            else:
                self.record_claim(session, kind, resource_id, current.to_dict())

    def add_event_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def add_admin_listener(self, listener: Callable[[str, str], None]) -> None:
        """Called (in a worker thread) with ``(host_id, admin_state)`` after an admin state change."""
        self._admin_listeners.append(listener)

    # -- hosts and zones --------------------------------------------------------------------
    def _known_host(self, host_id: str) -> bool:
        try:
            self.inventory.host(host_id)
        except KeyError:
            return False
        return True

    def _known_zone(self, zone_id: str) -> bool:
        try:
            self.inventory.zone(zone_id)
        except KeyError:
            return False
        return True

    def host_view(self, host_id: str) -> dict[str, Any]:
        if not self._known_host(host_id):
            raise not_found("host", host_id)
        usage = self.placement.host_usage(host_id)
        view = self.inventory.host(host_id).model_dump(mode="json")
        view.update({
            "adminState": _state(usage.admin_state),
            "operationalState": "ENABLED" if usage.up else "DISABLED",
            "schedulable": usage.schedulable,
            "usage": {
                "vcpusTotal": usage.vcpus_total, "vcpusUsed": usage.vcpus_used,
                "memoryMbTotal": usage.memory_mb_total, "memoryMbUsed": usage.memory_mb_used,
                "diskGbTotal": usage.disk_gb_total, "diskGbUsed": usage.disk_gb_used,
                "resources": usage.resources,
            },
        })
        return view

    def hosts(self, zone_id: str | None = None) -> list[dict[str, Any]]:
        if zone_id is not None and not self._known_zone(zone_id):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        return [self.host_view(host.hostId) for host in self.inventory.hosts if zone_id in (None, host.zoneId)]

    def set_admin_state(self, host_id: str, state: str) -> dict[str, Any]:
        if not self._known_host(host_id):
            raise not_found("host", host_id)
        with self.database.write() as session:
            row = session.get(HostStateRow, host_id)
            if row is None:
                session.add(HostStateRow(host_id=host_id, admin_state=state, version=1, updated_at=utcnow()))
            else:
                row.admin_state = state
                row.version += 1
                row.updated_at = utcnow()
            self.placement.set_admin_state(host_id, state)
            self._announce_capacity(session, self.inventory.host(host_id).zoneId)
        for listener in list(self._admin_listeners):
            try:
                listener(host_id, state)
            except Exception:
                log.exception("admin state listener failed for host %s", host_id)
        return self.host_view(host_id)

    def zone_views(self) -> list[dict[str, Any]]:
        return [self.zone_view(zone.zoneId) for zone in self.inventory.zones]

    def zone_view(self, zone_id: str) -> dict[str, Any]:
        """ResourceZone (IFA 005 8.10.2); ``zoneState`` is AVAILABLE while a host can take work."""
        if not self._known_zone(zone_id):
            raise not_found("resource zone", zone_id)
        zone = self.inventory.zone(zone_id)
        view = zone.model_dump(mode="json")
        schedulable = any(self.placement.host_usage(h.hostId).schedulable for h in self.inventory.hosts_in(zone_id))
        enabled = _state(zone.zoneState) == "ENABLED"
        view["zoneState"] = "AVAILABLE" if enabled and schedulable else "UNAVAILABLE"
        return view

    def compute_capacity(self, zone_id: str | None = None) -> dict[str, Any]:
        if zone_id is not None and not self._known_zone(zone_id):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        return _camel_dict(asdict(self.placement.capacity(zone_id)))

    def storage_capacity(self, zone_id: str | None = None, type_of_storage: str | None = None) -> dict[str, Any]:
        if zone_id is not None and not self._known_zone(zone_id):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")
        try:
            return _camel_dict(asdict(self.storage.capacity(zone_id, type_of_storage)))
        except UnknownZone as exc:
            raise invalid("zoneId", str(exc)) from exc

    # -- faults -----------------------------------------------------------------------------
    async def inject_fault(self, kind: str, target_id: str, params: dict[str, Any]) -> FaultRow:
        try:
            fault_kind = FaultKind(kind)
        except ValueError as exc:
            raise invalid("kind", f"must be one of {', '.join(k.value for k in FaultKind)}") from exc
        try:
            driver_fault_id = await self.driver.inject(fault_kind, target_id, params)
        except DriverError as exc:
            if exc.code is DriverErrorCode.NOT_FOUND:
                raise invalid("targetId", exc.message) from exc
            if exc.code is DriverErrorCode.INVALID_INPUT:
                raise invalid("params", exc.message) from exc
            raise driver_error(exc) from exc
        row = FaultRow(id=str(uuid.uuid4()), kind=fault_kind.value, target_id=target_id, params=params,
                       driver_fault_id=driver_fault_id, created_at=utcnow())
        await asyncio.to_thread(self._insert_fault, row)
        return row

    def _insert_fault(self, row: FaultRow) -> None:
        with self.database.write() as session:
            session.add(row)

    def faults(self) -> list[FaultRow]:
        with self.database.read() as session:
            return list(session.scalars(select(FaultRow).where(FaultRow.repaired_at.is_(None)).order_by(FaultRow.seq)))

    async def repair_fault(self, fault_id: str) -> FaultRow:
        with self.database.read() as session:
            row = session.scalar(select(FaultRow).where(FaultRow.id == fault_id))
        if row is None or row.repaired_at is not None:
            raise not_found("fault", fault_id)
        try:
            await self.driver.repair(row.driver_fault_id)
        except DriverError as exc:
            if exc.code is not DriverErrorCode.NOT_FOUND:  # already gone in the backend: repaired
                raise driver_error(exc) from exc
        with self.database.write() as session:
            stored = session.scalar(select(FaultRow).where(FaultRow.id == fault_id))
            assert stored is not None
            stored.repaired_at = utcnow()
        row.repaired_at = utcnow()
        return row

    # -- driver events ----------------------------------------------------------------------
    async def _consume_events(self) -> None:
        while True:
            try:
                async for event in self.driver.events():
                    await self.handle_event(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver event stream failed; resubscribing")
                await asyncio.sleep(0.5)

    async def handle_event(self, event: DriverEvent) -> None:
        if event.kind is EventKind.HOST_DOWN:
            self._host_down(event.object_id)
            await asyncio.to_thread(self._announce_zone_of, event.object_id)
        elif event.kind is EventKind.HOST_UP:
            self._host_up(event.object_id)
            await asyncio.to_thread(self._announce_zone_of, event.object_id)
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("driver event listener failed for %s", event.kind)

    def _host_down(self, host_id: str) -> None:
        if host_id in self._down_hosts or not self._known_host(host_id):
            return
        self._down_hosts.add(host_id)
        self.placement.host_down(host_id)

    def _host_up(self, host_id: str) -> None:
        if host_id not in self._down_hosts:
            return
        self._down_hosts.discard(host_id)
        self.placement.host_up(host_id)

    def _announce_zone_of(self, host_id: str) -> None:
        if not self._known_host(host_id):
            return
        with self.database.write() as session:
            self._announce_capacity(session, self.inventory.host(host_id).zoneId)

    async def announce_capacity_changes(self, interval: float) -> None:
        """Allocations change a zone's consumable capacity continuously; subscribers hear about it
        as at most one InformationChangeNotification per zone and ``interval``, and only when
        the zone's numbers changed (a notification per allocation would swamp them)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._announce_changed_zones)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("capacity announcement failed; retrying")

    def remember_capacity(self) -> None:
        """What :meth:`announce_capacity_changes` compares against first, taken at start-up before
        any request: a baseline taken at its first round instead already held what the first
        requests had changed, and that was never announced."""
        for zone in self.inventory.zones:
            self._announced[zone.zoneId] = self.compute_capacity(zone.zoneId)

    def _announce_changed_zones(self) -> None:
        changed = []
        for zone in self.inventory.zones:
            view = self.compute_capacity(zone.zoneId)
            if self._announced.get(zone.zoneId) not in (None, view):
                changed.append(zone.zoneId)
            self._announced[zone.zoneId] = view
        if changed:
            with self.database.write() as session:
                for zone_id in changed:
                    self._announce_capacity(session, zone_id)

    def _announce_capacity(self, session: Session, zone_id: str) -> None:
        """The consumable capacity of a zone changed: an information change of the zone."""
        information_change(
            session,
            api="compute-info",
            resource_type_id=f"zone:{zone_id}",
            change_type="UPDATE",
            vim_id=self.vim_id,
            changed_resource_data={"zone": self.zone_view(zone_id), "capacity": self.compute_capacity(zone_id)},
            audience=None,
        )


def build_driver(inventory: Inventory, settings: Any) -> Any:
    """The backend named by ``settings.driver``, its state kept in the data directory so it
    survives restarts: the simulator (default) or QEMU (docs/qemu.md)."""
    if settings.driver == "qemu":
        from vimkit.drivers.qemu import QemuConfig, QemuDriver

        state_dir = settings.data_dir / "qemu"
        return QemuDriver(QemuConfig(
            state_dir=state_dir, guest_dir=settings.qemu_guest_dir or state_dir / "guest",
            accel=settings.qemu_accel, boot_timeout=settings.qemu_boot_timeout,
            stop_timeout=settings.qemu_stop_timeout, max_concurrent_boots=settings.qemu_max_concurrent_boots,
        ), inventory)
    state_dir = settings.data_dir / "sim"
    state_dir.mkdir(parents=True, exist_ok=True)
    return SimDriver(inventory, SimConfig(seed=settings.sim_seed, latency_scale=settings.sim_latency_scale,
                                          state_dir=state_dir))


def _state(value: Any) -> str:
    return value if isinstance(value, str) else str(getattr(value, "value", value))


def _camel_dict(data: dict[str, Any]) -> dict[str, Any]:
    return {_camel(key): _camel_dict(value) if isinstance(value, dict) else value for key, value in data.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)

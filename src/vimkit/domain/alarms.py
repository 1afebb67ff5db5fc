"""The alarm engine: one fault is one alarm, raised once, updated in place, cleared when it ends.

Sources: the infrastructure's events (a host down is a CRITICAL equipment alarm and the root
cause of the alarms of the computes it took down; a link down on a host or network is the root
cause of the alarms of the ports behind it; a failed pool of its volumes'), the compute service
(a crashed compute, a task stuck past its deadline), the VIM's own capacity checks (a zone or pool
allocated above a configurable level), and notification delivery (a subscription marked FAILING). Alarms about infrastructure belong to the
operator (visible to admins); an alarm about a consumer's resource or subscription belongs to
that consumer's resource group. Every raise, change and clear is notified through the outbox
in the same transaction as the alarm itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from vimkit.api.problems import not_found
from vimkit.auth.principal import Principal
from vimkit.drivers.base import DriverEvent, EventKind, FaultKind
from vimkit.models.alarms import Alarm
from vimkit.notify.filters import ALARM, ALARM_CLEARED, ALARM_LIST_REBUILT
from vimkit.notify.outbox import emit
from vimkit.store.alarm_tables import AlarmRow
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.repository import (
    Page,
    PageRequest,
    check_if_match,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
    read_document,
)

log = logging.getLogger("vimkit.alarms")

OPERATOR_GROUP = "system"  # infrastructure alarms: seen by admins only

ALARM_SCHEMA = FilterSchema.from_model(
    Alarm,
    AlarmRow.body,
    columns={
        "alarmId": AlarmRow.id,
        "managedObjectId": AlarmRow.managed_object_id,
        "perceivedSeverity": AlarmRow.perceived_severity,
    },
)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class AlarmService:
    def __init__(self, database: Database, vim_id: str, base_url: str, capacity_threshold: float,
                 retention: timedelta) -> None:
        self.database = database
        self.vim_id = vim_id
        self.base_url = base_url
        self.capacity_threshold = capacity_threshold
        self.retention = retention
        # object type -> resource group of an object id: alarms about a consumer's resources
        # belong to its group (registered by the services that own those resources).
        self.group_resolvers: dict[str, Any] = {}
        self._link_roots: dict[str, str] = {}  # root LINK_DOWN event id -> its alarm id

    # -- raising and clearing (inside the caller's transaction) -----------------------------
    def raise_alarm(
        self,
        session: Session,
        *,
        managed_object_id: str,
        managed_object_type: str,
        probable_cause: str,
        severity: str,
        event_type: str,
        resource_group_id: str,
        fault_type: str | None = None,
        details: Iterable[str] = (),
        is_root_cause: bool = False,
        correlated: Iterable[str] = (),
        event_time: datetime | None = None,
    ) -> AlarmRow:
        """Raise the alarm of this fault, or update the active one (severity, details) in place."""
        now = utcnow()
        key = f"{managed_object_id}:{probable_cause}"
        row = session.scalar(select(AlarmRow).where(AlarmRow.active_key == key).with_for_update())
        details = list(details)
        if row is not None:
            body = dict(row.body)
            changed = body["perceivedSeverity"] != severity or body["faultDetails"] != details
            if not changed:
                return row
            body.update(perceivedSeverity=severity, faultDetails=details, alarmChangedTime=_iso(now))
            row.body = body
            row.perceived_severity = severity
            row.version += 1
            row.updated_at = now
        else:
            alarm_id = str(uuid.uuid4())
            body = {
                "alarmId": alarm_id,
                "managedObjectId": managed_object_id,
                "managedObjectType": managed_object_type,
                "alarmRaisedTime": _iso(now),
                "ackState": "UNACKNOWLEDGED",
                "perceivedSeverity": severity,
                "eventTime": _iso(event_time or now),
                "eventType": event_type,
                "faultType": fault_type,
                "probableCause": probable_cause,
                "isRootCause": is_root_cause,
                "correlatedAlarmId": list(correlated),
                "faultDetails": details,
            }
            row = AlarmRow(id=alarm_id, resource_group_id=resource_group_id, created_at=now, updated_at=now,
                           version=1, body={k: v for k, v in body.items() if v is not None},
                           managed_object_id=managed_object_id, probable_cause=probable_cause, active_key=key,
                           perceived_severity=severity)
            session.add(row)
        self._notify(session, row)
        return row

    def clear_alarm(self, session: Session, managed_object_id: str, probable_cause: str) -> AlarmRow | None:
        row = session.scalar(
            select(AlarmRow).where(AlarmRow.active_key == f"{managed_object_id}:{probable_cause}").with_for_update()
        )
        if row is None:
            return None
        now = utcnow()
        row.body = {**row.body, "perceivedSeverity": "CLEARED", "alarmClearedTime": _iso(now),
                    "alarmChangedTime": _iso(now)}
        row.active_key = None
        row.perceived_severity = "CLEARED"
        row.cleared_at = now
        row.version += 1
        row.updated_at = now
        emit(session, api="faults", notification_type=ALARM_CLEARED,
             payload={"alarmId": row.id, "alarmClearedTime": _iso(now)},
             audience=[row.resource_group_id], resource_id=row.id,
             perceivedSeverity="CLEARED", managedObjectId=row.managed_object_id)
        return row

    def _notify(self, session: Session, row: AlarmRow) -> None:
        emit(session, api="faults", notification_type=ALARM, payload={"alarm": self.representation(row)},
             audience=[row.resource_group_id], resource_id=row.id,
             perceivedSeverity=row.body["perceivedSeverity"], managedObjectId=row.managed_object_id)

    def representation(self, row: AlarmRow) -> dict[str, Any]:
        return {**row.body, "_links": {"self": {"href": f"{self.base_url}/faults/v1/alarms/{row.id}"}}}

    # -- queries ----------------------------------------------------------------------------
    def list(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None) -> Page[AlarmRow]:
        with self.database.read() as session:
            return list_documents(session, AlarmRow, visibility_of(principal), page, where)

    def get(self, principal: Principal, alarm_id: str) -> AlarmRow:
        row = read_document(self.database, AlarmRow, alarm_id, visibility_of(principal))
        if row is None:
            raise not_found("alarm", alarm_id)
        return row

    def acknowledge(self, principal: Principal, alarm_id: str, ack_state: str, if_match: str | None) -> AlarmRow:
        with self.database.write() as session:
            row = get_document(session, AlarmRow, alarm_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("alarm", alarm_id)
            check_if_match(if_match, row)
            if row.body.get("ackState") == ack_state:
                return row
            now = utcnow()
            body = {**row.body, "ackState": ack_state, "alarmChangedTime": _iso(now)}
            if ack_state == "ACKNOWLEDGED":
                body["alarmAcknowledgedTime"] = _iso(now)
            else:
                body.pop("alarmAcknowledgedTime", None)
            row.body = body
            row.version += 1
            row.updated_at = now
            self._notify(session, row)
        return row

    # -- sources ----------------------------------------------------------------------------
    async def handle_event(self, event: DriverEvent) -> None:
        if event.kind is EventKind.HOST_DOWN:
            await asyncio.to_thread(self._host_down, event.object_id, event.timestamp)
        elif event.kind is EventKind.HOST_UP:
            await asyncio.to_thread(self._clear, event.object_id, "hostUnreachable")
        elif event.kind is EventKind.VOLUME_FAILED:
            await asyncio.to_thread(self._volume_failed, event)
        elif event.kind is EventKind.VOLUME_RECOVERED:
            await asyncio.to_thread(self._clear, event.object_id, "storageFailure")
        elif event.kind is EventKind.LINK_DOWN:
            await asyncio.to_thread(self._link_down, event)
        elif event.kind is EventKind.LINK_UP:
            await asyncio.to_thread(self._clear, event.object_id, "linkDown")

    def _group_of(self, object_type: str, object_id: str) -> str:
        resolver = self.group_resolvers.get(object_type)
        return (resolver(object_id) if resolver else None) or OPERATOR_GROUP

    def active(self, session: Session, managed_object_id: str, probable_cause: str) -> AlarmRow | None:
        return session.scalar(select(AlarmRow).where(AlarmRow.active_key == f"{managed_object_id}:{probable_cause}"))

    def _link_down(self, event: DriverEvent) -> None:
        """A host's or network's link is the root cause; each port behind it gets its own alarm
        (in its owner's group) that lists the root one. Events name their root by event id."""
        object_type = getattr(event.object_type, "value", str(event.object_type))
        is_port = object_type == "VirtualNetworkPort"
        root = self._link_roots.get(event.cause_event_id or "") if is_port else None
        details = [str(event.details.get("reason") or "link down")]
        if event.details.get("computeId"):
            details.append(f"NIC of compute {event.details['computeId']}")
        with self.database.write() as session:
            row = self.raise_alarm(
                session, managed_object_id=event.object_id, managed_object_type=object_type,
                probable_cause="linkDown", severity="MAJOR" if is_port else "CRITICAL",
                event_type="COMMUNICATIONS_ALARM", fault_type="NETWORK_LINK_DOWN",
                resource_group_id=self._group_of(object_type, event.object_id), details=details,
                is_root_cause=not is_port, correlated=[root] if root else [], event_time=event.timestamp,
            )
        if not is_port:
            self._link_roots[event.event_id] = row.id
            while len(self._link_roots) > 10_000:  # correlation is for fresh events; keep the map bounded
                self._link_roots.pop(next(iter(self._link_roots)))

    # -- computes (called by the compute service inside its own transaction) ---------------
    def compute_crashed(self, session: Session, compute_id: str, resource_group_id: str, reason: str,
                        host_id: str | None, caused_by_host: bool) -> AlarmRow:
        correlated = []
        details = [reason]
        if caused_by_host and host_id is not None:
            root = self.active(session, host_id, "hostUnreachable")
            if root is not None:
                correlated.append(root.id)
                details.append("root cause: its host is down")
        return self.raise_alarm(
            session, managed_object_id=compute_id, managed_object_type="VirtualCompute",
            probable_cause="computeCrashed", severity="MAJOR", event_type="PROCESSING_ERROR_ALARM",
            fault_type="COMPUTE_CRASH", resource_group_id=resource_group_id, details=details,
            correlated=correlated,
        )

    def compute_stuck(self, session: Session, compute_id: str, resource_group_id: str, operation: str,
                      seconds: float) -> AlarmRow:
        return self.raise_alarm(
            session, managed_object_id=compute_id, managed_object_type="VirtualCompute",
            probable_cause="transitionTimeout", severity="MINOR", event_type="PROCESSING_ERROR_ALARM",
            fault_type="STUCK_TRANSITION", resource_group_id=resource_group_id,
            details=[f"{operation} has not finished after {seconds:.0f} s"],
        )

    def clear_all(self, session: Session, managed_object_id: str) -> None:
        """The object is gone: every active alarm about it is cleared."""
        for row in session.scalars(select(AlarmRow).where(AlarmRow.managed_object_id == managed_object_id,
                                                          AlarmRow.active_key.is_not(None))):
            self.clear_alarm(session, managed_object_id, row.probable_cause)

    def _volume_failed(self, event: DriverEvent) -> None:
        """A failed volume belongs to its consumer; a failed pool is the operator's."""
        object_type = getattr(event.object_type, "value", str(event.object_type))
        group = self._group_of(object_type, event.object_id)
        with self.database.write() as session:
            self.raise_alarm(
                session, managed_object_id=event.object_id, managed_object_type=object_type,
                probable_cause="storageFailure", severity="CRITICAL" if object_type == "StoragePool" else "MAJOR",
                event_type="EQUIPMENT_ALARM", fault_type="STORAGE_FAILURE", resource_group_id=group,
                details=[str(event.details.get("reason") or "storage failure")], event_time=event.timestamp,
                is_root_cause=object_type == "StoragePool",
            )

    def _host_down(self, host_id: str, when: datetime | None = None) -> None:
        with self.database.write() as session:
            self.raise_alarm(
                session, managed_object_id=host_id, managed_object_type="Host", probable_cause="hostUnreachable",
                severity="CRITICAL", event_type="EQUIPMENT_ALARM", fault_type="HOST_DOWN",
                resource_group_id=OPERATOR_GROUP, details=[f"host {host_id} is down or unreachable"],
                is_root_cause=True, event_time=when,
            )

    def _clear(self, managed_object_id: str, probable_cause: str) -> None:
        with self.database.write() as session:
            self.clear_alarm(session, managed_object_id, probable_cause)

    def check_capacity(self, zones: dict[str, dict[str, Any]], pools: dict[str, dict[str, Any]]) -> None:
        """Raise (MAJOR at the threshold, CRITICAL when full) or clear capacity alarms."""
        with self.database.write() as session:
            for object_id, (object_type, view) in {**{z: ("Zone", v) for z, v in zones.items()},
                                                    **{p: ("StoragePool", v) for p, v in pools.items()}}.items():
                ratio, what = _fullest(view)
                if ratio >= self.capacity_threshold:
                    self.raise_alarm(
                        session, managed_object_id=object_id, managed_object_type=object_type,
                        probable_cause="capacityThresholdExceeded",
                        severity="CRITICAL" if ratio >= 1.0 else "MAJOR", event_type="QOS_ALARM",
                        resource_group_id=OPERATOR_GROUP,
                        details=[f"{what} {ratio:.0%} allocated (threshold {self.capacity_threshold:.0%})"],
                    )
                else:
                    self.clear_alarm(session, object_id, "capacityThresholdExceeded")

    def subscription_failing(self, session: Session, subscription_id: str, resource_group_id: str, reason: str) -> None:
        self.raise_alarm(
            session, managed_object_id=subscription_id, managed_object_type="Subscription",
            probable_cause="notificationDeliveryFailure", severity="MAJOR", event_type="COMMUNICATIONS_ALARM",
            resource_group_id=resource_group_id, details=[reason],
        )

    def subscription_recovered(self, session: Session, subscription_id: str) -> None:
        self.clear_alarm(session, subscription_id, "notificationDeliveryFailure")

    # -- restart and housekeeping -----------------------------------------------------------
    def rebuild(self, active_host_faults: Iterable[str]) -> None:
        """After a restart: re-evaluate host alarms against the faults the backend reports, then
        tell every subscriber that the list was rebuilt (AlarmListRebuiltNotification)."""
        down = set(active_host_faults)
        for host_id in down:
            self._host_down(host_id)
        with self.database.write() as session:
            stale = session.scalars(
                select(AlarmRow).where(AlarmRow.active_key.is_not(None), AlarmRow.probable_cause == "hostUnreachable")
            ).all()
            for row in stale:
                if row.managed_object_id not in down:
                    self.clear_alarm(session, row.managed_object_id, "hostUnreachable")
            emit(session, api="faults", notification_type=ALARM_LIST_REBUILT,
                 payload={"_links": {"alarms": {"href": f"{self.base_url}/faults/v1/alarms"}}}, audience=None)

    def purge_cleared(self) -> int:
        cutoff = utcnow() - self.retention
        with self.database.write() as session:
            result = session.execute(delete(AlarmRow).where(AlarmRow.cleared_at.is_not(None), AlarmRow.cleared_at < cutoff))
        return int(result.rowcount or 0)

    async def run(self, infrastructure: Any, interval: float) -> None:
        while True:
            try:
                zones = {zone.zoneId: infrastructure.compute_capacity(zone.zoneId) for zone in infrastructure.inventory.zones}
                pools = {
                    usage.pool_id: {"totalGb": usage.capacity_gb, "allocatedGb": usage.allocated_gb}
                    for usage in infrastructure.storage.usage()
                }
                await asyncio.to_thread(self.check_capacity, zones, pools)
                await asyncio.to_thread(self.purge_cleared)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alarm checks failed; retrying")
            await asyncio.sleep(interval)


def _fullest(view: dict[str, Any]) -> tuple[float, str]:
    best, what = 0.0, "nothing"
    for name, amount in view.items():
        if isinstance(amount, dict) and amount.get("total"):
            ratio = amount["allocated"] / amount["total"]
            if ratio > best:
                best, what = ratio, name
    if "totalGb" in view and view["totalGb"]:
        ratio = view["allocatedGb"] / view["totalGb"]
        if ratio > best:
            best, what = ratio, "storage"
    return best, what


def host_faults(faults: Iterable[Any]) -> list[str]:
    return [fault.target_id for fault in faults if fault.kind is FaultKind.HOST_DOWN]


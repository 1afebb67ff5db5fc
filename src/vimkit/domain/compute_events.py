"""What happens to computes without a consumer asking: restarts of the VIM and infrastructure events.

A mixin of :class:`vimkit.domain.compute.ComputeService`. :meth:`recover` runs at start and
finishes the tasks a restart interrupted; the event handlers turn a crash, a guest coming back,
a NIC's link going down or up and a host's admin state into the compute's state, its change
notification and (with fault management) its alarm, in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from vimkit.api.problems import ApiError, Cause, problem_body
from vimkit.domain.compute_support import BUSY_STATES, now_text, system_principal
from vimkit.drivers.base import DriverError, DriverEvent, EventKind, ObjectType
from vimkit.store.compute_tables import ComputeRow
from vimkit.store.network_tables import PortRow
from vimkit.store.storage_tables import StorageRow

if TYPE_CHECKING:
    from vimkit.domain.compute import ComputeService

log = logging.getLogger("vimkit.compute")


class ComputeEvents:
    # ------------------------------------------------------------------ recovery

    async def recover(self: ComputeService) -> None:
        """Finish what a restart interrupted: an allocation fails cleanly, a termination completes,
        and any other task (operate, scale, migrate, update) takes the driver's word for the state."""
        with self.database.read() as session:
            rows = list(session.scalars(select(ComputeRow).where(ComputeRow.state.in_(BUSY_STATES))))
        for row in rows:
            try:
                if row.state == "ALLOCATING":
                    await self._recover_allocation(row)
                elif row.state == "TERMINATING":
                    await self._terminate(row)
                else:
                    await self._recover_task(row)
            except Exception:  # noqa: BLE001 - one bad compute must not stop the others from recovering
                log.exception("could not recover compute %s (%s)", row.id, row.state)

    async def _recover_allocation(self: ComputeService, row: ComputeRow) -> None:
        principal = system_principal(row.resource_group_id)
        supplied = {nic["networkPortId"] for nic in row.body.get("virtualNetworkInterface") or []}
        with self.database.read() as session:
            plugged = list(session.scalars(select(PortRow.id).where(PortRow.attached_resource_id == row.id)))
            attached = [s.id for s in session.scalars(select(StorageRow))
                        if any(a.get("computeId") == row.id for a in s.body.get("attachments") or [])]
        error = ApiError(503, "the allocation was interrupted by a restart of the VIM", cause=Cause.BACKEND_UNAVAILABLE,
                         retryable=True)
        await self._undo(principal, row.id, True, attached, plugged, [p for p in plugged if p not in supplied])
        await asyncio.to_thread(self._mark_failed, row.id, error)

    async def _recover_task(self: ComputeService, row: ComputeRow) -> None:
        try:
            info = await self.infra.driver.get_compute(row.id)
        except DriverError:
            info = None

        def settle(body: dict[str, Any]) -> dict[str, Any]:
            body["provisioningState"] = "ALLOCATED"
            if info is not None:
                body["runningState"] = info.running_state.value
                body["hostId"], body["zoneId"] = info.host_id, self.infra.placement.zones().get(info.host_id)
            operation = body.get("lastOperation")
            if operation and operation.get("status") == "PROCESSING":
                operation.update(status="FAILED", finishedAt=now_text(), error=problem_body(ApiError(
                    503, "interrupted by a restart of the VIM", cause=Cause.BACKEND_UNAVAILABLE, retryable=True)))
            return body

        claim = self.infra.placement.get(row.id)
        if claim is not None and claim.source is not None:
            if info is not None and info.host_id == claim.host_id:
                claim = self.infra.placement.confirm_move(row.id)
            else:
                claim = self.infra.placement.revert_move(row.id)
        await asyncio.to_thread(self.change, None, row.id, settle, "MODIFIED", claim=claim)

    # ------------------------------------------------------------------ infrastructure events

    async def handle_event(self: ComputeService, event: DriverEvent) -> None:
        if event.object_type is ObjectType.COMPUTE and event.kind in (EventKind.COMPUTE_CRASHED,
                                                                       EventKind.COMPUTE_STATE):
            await asyncio.to_thread(self._guest_changed, event)
        elif event.object_type is ObjectType.PORT and event.kind in (EventKind.LINK_DOWN, EventKind.LINK_UP):
            compute_id = event.details.get("computeId")
            if compute_id:
                await asyncio.to_thread(self._link_changed, str(compute_id), event.object_id,
                                        event.kind is EventKind.LINK_UP)

    def _guest_changed(self: ComputeService, event: DriverEvent) -> None:
        """A crash (or the guest coming back) the VIM did not ask for: state, notification and
        alarm in one transaction."""
        crashed = event.kind is EventKind.COMPUTE_CRASHED
        state = "CRASHED" if crashed else str(event.details.get("runningState") or "RUNNING")
        reason = str(event.details.get("reason") or ("guest crashed" if crashed else "guest state changed"))

        def apply(body: dict[str, Any]) -> dict[str, Any]:
            body["runningState"] = state
            body["operationalState"] = "DISABLED" if crashed else "ENABLED"
            body["stateReason"] = reason
            return body

        try:
            with self.database.write() as session:
                row = self.change_in(session, None, event.object_id, apply, "MODIFIED", expect=("ALLOCATED", "UPDATING"))
                if crashed and self.alarms is not None:
                    self.alarms.compute_crashed(session, row.id, row.resource_group_id, reason, row.host_id,
                                                caused_by_host=event.cause_event_id is not None)
        except ApiError as exc:
            log.info("compute event %s for %s ignored: %s", event.kind.value, event.object_id, exc.detail)

    def _link_changed(self: ComputeService, compute_id: str, port_id: str, up: bool) -> None:
        def apply(body: dict[str, Any]) -> dict[str, Any]:
            body["virtualNetworkInterface"] = [
                {**nic, "operationalState": "ENABLED" if up else "DISABLED"} if nic.get("networkPortId") == port_id
                else nic for nic in body.get("virtualNetworkInterface") or []]
            return body

        try:
            self.change(None, compute_id, apply, "MODIFIED")
        except ApiError:
            return

    def handle_admin_state(self: ComputeService, host_id: str, admin_state: str) -> None:
        """A host entering or leaving MAINTENANCE (or DISABLED) is a change of each compute on it."""
        computes = sorted(self.infra.placement.resources_on(host_id))
        label = None if admin_state == "ENABLED" else admin_state

        def apply(body: dict[str, Any]) -> dict[str, Any]:
            if label is None:
                body.pop("hostState", None)
            else:
                body["hostState"] = label
            return body

        for compute_id in computes:
            try:
                self.change(None, compute_id, apply, "MODIFIED")
            except ApiError:
                continue


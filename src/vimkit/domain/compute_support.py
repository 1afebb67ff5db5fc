"""Validation and translation shared by the compute service's allocation and its task operations.

Everything here runs before any capacity is claimed, so a request that names an unknown flavour,
zone, group, network, port or volume is refused with a 400 naming the field and nothing happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, conflict, invalid
from vimkit.auth.principal import Principal
from vimkit.auth.scopes import ADMIN_SCOPE
from vimkit.domain.affinity import resolve_rules
from vimkit.domain.infrastructure import driver_error
from vimkit.drivers.base import DriverError
from vimkit.models.common import AffinityOrAntiAffinityConstraint
from vimkit.models.compute import ComputeLocationConstraints, VirtualInterfaceData
from vimkit.models.network import FixedIpData
from vimkit.placement.model import AffinityRule, AffinityUnsatisfiable, NoValidHost, PlacementError, UnknownHost, UnknownZone
from vimkit.store.compute_tables import ComputeAffinityGroupRow, ComputeRow, ComputeSnapshotRow
from vimkit.store.models import FlavourRow
from vimkit.store.prepared import Prepared
from vimkit.store.network_tables import NetworkRow, PortRow
from vimkit.store.repository import connection_of, get_document, utcnow, visibility_of
from vimkit.store.storage_tables import StorageRow

BUSY_STATES = ("ALLOCATING", "UPDATING", "TERMINATING")


def now_text() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def placement_error(exc: PlacementError, location_field: str) -> ApiError:
    """NO_CAPACITY / AFFINITY_UNSATISFIABLE (409) for the engine's refusals."""
    if isinstance(exc, AffinityUnsatisfiable):
        return conflict(exc.reason, Cause.AFFINITY_UNSATISFIABLE)
    if isinstance(exc, NoValidHost):
        return conflict(exc.reason, Cause.NO_CAPACITY)
    if isinstance(exc, UnknownZone):
        return invalid(f"{location_field}/zoneId", exc.reason)
    if isinstance(exc, UnknownHost):
        return invalid(f"{location_field}/hostId", exc.reason)
    return conflict(exc.reason)


def driver_error_of(exc: BaseException) -> ApiError:
    """The problem a failed step leaves on the compute (``error``) and answers with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DriverError):
        return driver_error(exc)
    return ApiError(500, f"unexpected failure: {type(exc).__name__}", cause=Cause.INTERNAL)


def flavour_numbers(flavour: dict[str, Any]) -> tuple[int, int, int, str | None]:
    """vCPUs, memory MB, local disk GB (root + ephemeral) and CPU architecture of a flavour."""
    disk = sum(float(item.get("sizeOfStorage", 0)) for item in flavour.get("storageAttributes") or []
               if item.get("typeOfStorage") in ("root", "ephemeral"))
    return (int(flavour["virtualCpu"]["numVirtualCpu"]), int(float(flavour["virtualMemory"]["virtualMemSize"])),
            int(disk + 0.999), flavour["virtualCpu"].get("cpuArchitecture"))


@dataclass
class NicPlan:
    """One NIC of an allocation: an existing port, or a port to create on a network."""

    network_id: str | None
    port_id: str | None
    vnic_type: str = "NORMAL"
    ip_addresses: list[str] = field(default_factory=list)
    mac_address: str | None = None
    bandwidth: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    supplied: dict[str, Any] = field(default_factory=dict)

    def fixed_ips(self) -> list[FixedIpData] | None:
        if not self.ip_addresses:
            return None
        return [FixedIpData(ipAddress=address) for address in self.ip_addresses]

    def supplied_interface(self, compute_id: str) -> dict[str, Any]:
        """How a consumer-supplied port shows before the compute exists (completed at the end)."""
        return {"resourceId": self.port_id, "ownerId": compute_id, "networkId": self.network_id,
                "networkPortId": self.port_id, "ipAddress": self.supplied.get("ipAddress", []),
                "macAddress": self.supplied.get("macAddress"), "typeVirtualNic": self.vnic_type,
                "operationalState": "DISABLED", "accelerationCapability": [], "metadata": dict(self.metadata),
                "portCreatedByVim": False}


_FLAVOURS = FlavourRow.__table__
_FLAVOUR_QUERY = Prepared(select(_FLAVOURS.c.resource_group_id, _FLAVOURS.c.is_public, _FLAVOURS.c.body).where(
    _FLAVOURS.c.id == bindparam("flavour_id")))


class ComputeRules:
    def __init__(self, database: Any, infrastructure: Any) -> None:
        self.database = database
        self.infra = infrastructure

    def flavour(self, flavours: Any, principal: Principal, flavour_id: str, name: str) -> dict[str, Any]:
        try:
            return dict(flavours.get(principal, flavour_id).body)
        except ApiError as exc:
            if exc.status == 404:
                raise invalid(name, f"flavour '{flavour_id}' does not exist") from exc
            raise

    @staticmethod
    def flavour_in(session: Session, principal: Principal, flavour_id: str, name: str) -> dict[str, Any]:
        # A plain SELECT of three columns: through the ORM this one lookup was a tenth of an allocation.
        row = _FLAVOUR_QUERY.first(connection_of(session), {"flavour_id": flavour_id})
        if row is None or not visibility_of(principal).sees(row.resource_group_id, row.is_public):
            raise invalid(name, f"flavour '{flavour_id}' does not exist")
        return dict(row.body)

    def location(self, location: ComputeLocationConstraints | None, name: str
                 ) -> tuple[frozenset[str] | None, str | None]:
        if location is None:
            return None, None
        inventory = self.infra.inventory
        zone_ids = None
        if location.zoneId is not None:
            if not any(zone.zoneId == location.zoneId for zone in inventory.zones):
                raise invalid(f"{name}/zoneId", f"zone '{location.zoneId}' does not exist")
            zone_ids = frozenset({location.zoneId})
        if location.hostId is not None:
            host = next((h for h in inventory.hosts if h.hostId == location.hostId), None)
            if host is None:
                raise invalid(f"{name}/hostId", f"host '{location.hostId}' does not exist")
            if location.zoneId is not None and host.zoneId != location.zoneId:
                raise invalid(f"{name}/hostId", f"host '{location.hostId}' is not in zone '{location.zoneId}'")
        return zone_ids, location.hostId

    def check_image(self, session: Session, principal: Principal, image_id: str) -> None:
        """The image must be one the consumer may boot: a registered image of its resource group
        or a public one (docs/images.md), or a compute snapshot of its group."""
        from vimkit.domain.images import usable_image  # the registry imports the compute tables

        if usable_image(session, visibility_of(principal), image_id) is not None:
            return
        snapshot = session.scalar(select(ComputeSnapshotRow).where(ComputeSnapshotRow.id == image_id))
        if snapshot is None or (not principal.is_admin and snapshot.resource_group_id != principal.resource_group_id):
            raise invalid("vcImageId", f"image '{image_id}' does not exist (see /admin/v1/images)")

    def affinity(self, session: Session, principal: Principal, constraints: Sequence[AffinityOrAntiAffinityConstraint],
                 name: str) -> tuple[AffinityRule, ...]:
        return resolve_rules(session, visibility_of(principal), constraints, name, ComputeAffinityGroupRow, ComputeRow,
                             "compute")

    def nics(self, session: Session, principal: Principal, flavour: dict[str, Any],
             interfaces: Sequence[VirtualInterfaceData], name: str, offset: int = 0) -> list[NicPlan]:
        """Entry *i* of ``interfaces`` completes the flavour's *i*-th NIC template; extra entries
        add NICs. Every NIC must end up with a network or a port."""
        templates = list(flavour.get("virtualNetworkInterface") or []) if flavour else []
        count = max(len(templates), len(interfaces))
        plans: list[NicPlan] = []
        seen_ports: set[str] = set()
        visibility = visibility_of(principal)
        for index in range(count):
            template = templates[index] if index < len(templates) else {}
            given = interfaces[index] if index < len(interfaces) else None
            field_name = f"{name}/{index + offset}"
            port_id = (given.networkPortId if given else None) or template.get("networkPortId")
            network_id = (given.networkId if given else None) or template.get("networkId")
            if port_id is not None and given is not None and given.networkId is not None and given.networkPortId:
                raise invalid(field_name, "give networkId or networkPortId, not both")
            plan = NicPlan(network_id, port_id,
                           (given.typeVirtualNic.value if given and given.typeVirtualNic else None)
                           or template.get("typeVirtualNic") or "NORMAL",
                           list(given.ipAddress or []) if given else [],
                           given.macAddress if given else None,
                           (given.bandwidth if given else None) or template.get("bandwidth"),
                           dict((given.metadata if given else None) or template.get("metadata") or {}))
            if port_id is not None:
                if port_id in seen_ports:
                    raise invalid(f"{field_name}/networkPortId", f"port '{port_id}' is used by two NICs")
                seen_ports.add(port_id)
                if plan.ip_addresses or plan.mac_address:
                    raise invalid(field_name, "ipAddress and macAddress belong to the port; give them with networkId")
                port = get_document(session, PortRow, port_id, visibility)
                if port is None:
                    raise invalid(f"{field_name}/networkPortId", f"port '{port_id}' does not exist")
                if port.state != "ALLOCATED":
                    raise conflict(f"port '{port_id}' is {port.state}")
                if port.attached_resource_id is not None:
                    raise ApiError(409, f"port '{port_id}' is attached to '{port.attached_resource_id}'",
                                   cause=Cause.CONFLICT, invalid_params=[(f"{field_name}/networkPortId", "attached")])
                plan.network_id = port.network_id
                plan.supplied = {"macAddress": port.body.get("macAddress"),
                                 "ipAddress": [f["ipAddress"] for f in port.body.get("fixedIps") or []]}
            elif network_id is not None:
                network = get_document(session, NetworkRow, network_id, visibility)
                if network is None:
                    raise invalid(f"{field_name}/networkId", f"network '{network_id}' does not exist")
                if network.state != "ALLOCATED":
                    raise conflict(f"network '{network_id}' is {network.state}")
            else:
                raise invalid(field_name, "a NIC needs networkId or networkPortId (here or in the flavour)")
            plans.append(plan)
        return plans

    def volumes(self, session: Session, principal: Principal, storage_ids: Sequence[str], name: str) -> None:
        visibility = visibility_of(principal)
        seen: set[str] = set()
        for index, storage_id in enumerate(storage_ids):
            field_name = f"{name}/{index}"
            if storage_id in seen:
                raise invalid(field_name, f"storage '{storage_id}' is listed twice")
            seen.add(storage_id)
            volume = get_document(session, StorageRow, storage_id, visibility)
            if volume is None:
                raise invalid(field_name, f"storage '{storage_id}' does not exist")
            body = volume.body
            if body.get("provisioningState") != "ALLOCATED" or body.get("operationalState") == "DISABLED":
                raise ApiError(409, f"storage '{storage_id}' cannot be attached now", cause=Cause.CONFLICT,
                               invalid_params=[(field_name, "not attachable")])
            if body.get("attachments") and not body.get("multiAttach"):
                raise ApiError(409, f"storage '{storage_id}' is attached and is not multi-attach",
                               cause=Cause.CONFLICT, invalid_params=[(field_name, "attached")])


def disk_document(volume: dict[str, Any], compute_id: str) -> dict[str, Any]:
    """How an attached volume shows in the compute's ``virtualDisks``."""
    device = next((a.get("device") for a in volume.get("attachments") or [] if a.get("computeId") == compute_id), None)
    disk = {"storageId": volume["storageId"], "typeOfStorage": volume.get("typeOfStorage"),
            "sizeOfStorage": volume.get("sizeOfStorage")}
    if device:
        disk["device"] = device
    return disk


def system_principal(group: str) -> Principal:
    """Acts for the VIM itself (recovery, infrastructure events) inside one resource group."""
    return Principal("vimkit-system", group, frozenset({ADMIN_SCOPE}))

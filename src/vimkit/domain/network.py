"""Virtualised network resources (IFA 005 7.4): networks, subnets and ports.

Every allocation follows the same three steps:

1. a write transaction validates the request, picks the segment / addresses / MAC, and inserts
   the resource in ``ALLOCATING`` with its allocation rows (the unique constraints of
   :mod:`vimkit.store.network_tables` make a concurrent duplicate fail; the transaction is then
   retried and picks another value);
2. the driver realises it (``create_network`` / ``create_subnet`` / ``create_port``);
3. a second transaction marks it ``ALLOCATED`` and writes the ADDED notification (and, for a
   network, the network-info capacity change). On a driver failure the resource and everything
   it held are released instead, a FAILED notification is written, and the caller answers with
   the driver's problem.

Termination mirrors it: ``TERMINATING``, the driver call, then the rows and allocations go and
REMOVED is written. Both happen inside the request, so the API answers 201 / 204 with the final
state (the simulated driver takes milliseconds).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vimkit.api.problems import ApiError, Cause, conflict, invalid, not_found, problem_body
from vimkit.auth.principal import Principal
from vimkit.domain import ipam
from vimkit.domain.infrastructure import driver_error
from vimkit.drivers.base import (
    DriverError,
    DriverErrorCode,
    FixedIp,
    NetworkSpec,
    PortSpec,
    Segmentation,
    SubnetSpec,
)
from vimkit.infra.inventory import ProviderNetwork
from vimkit.models.network import (
    NetworkAffinityGroup,
    NetworkAffinityGroupCreate,
    NetworkSubnet,
    NetworkSubnetData,
    VirtualNetwork,
    VirtualNetworkData,
    VirtualNetworkPort,
    VirtualNetworkPortData,
)
from vimkit.notify.outbox import information_change, resource_change
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.models import DocumentMixin
from vimkit.store.network_tables import (
    IpAllocationRow,
    NetworkAffinityGroupRow,
    NetworkRow,
    NetworkSegmentRow,
    PortRow,
    SubnetRow,
)
from vimkit.store.repository import (
    Page,
    PageRequest,
    check_if_match,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
)

log = logging.getLogger("vimkit.network")
Row = TypeVar("Row", NetworkRow, SubnetRow, PortRow)
MAX_ATTEMPTS = 40
TYPE_PREFERENCE = ("vxlan", "vlan", "flat")

NETWORK_SCHEMA = FilterSchema.from_model(
    VirtualNetwork, NetworkRow.body, columns={"networkResourceId": NetworkRow.id, "isShared": NetworkRow.is_shared}
)
SUBNET_SCHEMA = FilterSchema.from_model(
    NetworkSubnet, SubnetRow.body, columns={"resourceId": SubnetRow.id, "networkId": SubnetRow.network_id}
)
PORT_SCHEMA = FilterSchema.from_model(
    VirtualNetworkPort,
    PortRow.body,
    columns={"resourceId": PortRow.id, "networkId": PortRow.network_id, "macAddress": PortRow.mac},
)

AFFINITY_GROUP_SCHEMA = FilterSchema.from_model(
    NetworkAffinityGroup, NetworkAffinityGroupRow.body, columns={"groupId": NetworkAffinityGroupRow.id}
)

_KIND = {NetworkRow: ("network", "NETWORK"), SubnetRow: ("subnet", "SUBNET"), PortRow: ("port", "PORT"),
         NetworkAffinityGroupRow: ("network affinity group", "GROUP")}


def _bump(row: DocumentMixin, body: dict[str, Any]) -> None:
    row.body = body  # a new dict: SQLAlchemy sees the change
    row.version += 1
    row.updated_at = utcnow()


def _reference_not_found(kind: str, name: str, resource_id: str) -> ApiError:
    return ApiError(404, f"{kind} '{resource_id}' does not exist", invalid_params=[(name, "does not exist")])


def _merge_metadata(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class NetworkService:
    def __init__(self, database: Database, infrastructure: Any) -> None:
        self.database = database
        self.infra = infrastructure

    @property
    def vim_id(self) -> str:
        return str(self.infra.vim_id)

    @property
    def providers(self) -> list[ProviderNetwork]:
        return list(self.infra.inventory.providerNetworks)

    # ------------------------------------------------------------------ common

    def _group(self, principal: Principal, requested: str | None) -> str:
        if requested is None or requested == principal.resource_group_id:
            return principal.resource_group_id
        if principal.is_admin:
            return requested
        raise ApiError(403, "resourceGroupId must be the consumer's own resource group", cause=Cause.FORBIDDEN,
                       invalid_params=[("resourceGroupId", "not the consumer's resource group")])

    def _with_retry(self, attempt: Callable[[], Any]) -> Any:
        """Run a write transaction again when a unique constraint refused a concurrent duplicate."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except IntegrityError:
                continue
        raise ApiError(503, "too much contention on network allocations; try again", headers={"Retry-After": "1"},
                       cause=Cause.BACKEND_UNAVAILABLE)

    def _announce(self, session: Session, row: DocumentMixin, resource_type: str, change_type: str,
                  body: dict[str, Any] | None = None) -> None:
        body = body if body is not None else row.body
        shared = bool(getattr(row, "is_shared", False))
        resource_change(
            session,
            api="network",
            resource_type=resource_type,
            resource_id=row.id,
            change_type=change_type,
            resource_group_id=row.resource_group_id,
            vim_id=self.vim_id,
            changed_resource_data=body,
            metadata=body.get("metadata") or {},
            audience=None if shared else [row.resource_group_id],
        )

    def _announce_capacity(self, session: Session, provider_id: str) -> None:
        provider = next((p for p in self.providers if p.providerNetworkId == provider_id), None)
        if provider is None:
            return
        information_change(
            session,
            api="network-info",
            resource_type_id=provider_id,
            change_type="UPDATE",
            vim_id=self.vim_id,
            changed_resource_data={"capacity": self._segment_capacity(session, provider)},
            audience=None,
        )

    def get(self, model: type[Row], principal: Principal, resource_id: str) -> Row:
        with self.database.read() as session:
            row = get_document(session, model, resource_id, visibility_of(principal))
        if row is None:
            raise not_found(_KIND[model][0], resource_id)
        return row

    def list(self, model: type[Row], principal: Principal, page: PageRequest,
             where: ColumnElement[bool] | None) -> Page[Row]:
        with self.database.read() as session:
            return list_documents(session, model, visibility_of(principal), page, where)

    def _finish(self, model: type[Row], resource_id: str, provider_id: str | None = None) -> Row:
        with self.database.write() as session:
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                raise not_found(_KIND[model][0], resource_id)
            row.state = "ALLOCATED"
            _bump(row, {**row.body, "provisioningState": "ALLOCATED"})
            self._announce(session, row, _KIND[model][1], "ADDED")
            if provider_id is not None:
                session.flush()
                self._announce_capacity(session, provider_id)
        return row

    @staticmethod
    def _lock_parent(session: Session, model: type[Row], resource_id: str) -> None:
        """Lock a subnet's network before the subnet: the order allocation uses (no deadlock)."""
        if model is SubnetRow:
            network_id = session.scalar(select(SubnetRow.network_id).where(SubnetRow.id == resource_id))
            if network_id is not None:
                session.scalar(select(NetworkRow.seq).where(NetworkRow.id == network_id).with_for_update())

    def _release(self, session: Session, row: DocumentMixin) -> None:
        """Delete a resource row and every allocation it holds."""
        if isinstance(row, NetworkRow):
            session.execute(delete(NetworkSegmentRow).where(NetworkSegmentRow.network_id == row.id))
        elif isinstance(row, SubnetRow):
            session.execute(delete(IpAllocationRow).where(IpAllocationRow.subnet_id == row.id))
            network = session.scalar(select(NetworkRow).where(NetworkRow.id == row.network_id).with_for_update())
            if network is not None and row.id in network.body.get("subnetId", []):
                _bump(network, {**network.body, "subnetId": [s for s in network.body["subnetId"] if s != row.id]})
        elif isinstance(row, PortRow):
            session.execute(delete(IpAllocationRow).where(IpAllocationRow.port_id == row.id))
        session.delete(row)

    def _fail(self, model: type[Row], resource_id: str, error: ApiError) -> None:
        """The driver could not realise it: announce FAILED and leave nothing allocated."""
        with self.database.write() as session:
            self._lock_parent(session, model, resource_id)
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                return
            body = {**row.body, "provisioningState": "FAILED", "error": problem_body(error)}
            self._announce(session, row, _KIND[model][1], "FAILED", body)
            provider_id = row.provider_network_id if isinstance(row, NetworkRow) else None
            self._release(session, row)
            if provider_id is not None:
                session.flush()
                self._announce_capacity(session, provider_id)

    async def _realise(self, model: type[Row], row: Row, call: Callable[[], Any],
                       provider_id: str | None = None) -> Row:
        try:
            await call()
        except DriverError as exc:
            error = driver_error(exc)
            await run_in_threadpool(self._fail, model, row.id, error)
            raise error from exc
        except BaseException:
            await run_in_threadpool(self._fail, model, row.id,
                                    ApiError(500, "allocation interrupted", cause=Cause.INTERNAL))
            raise
        return await run_in_threadpool(self._finish, model, row.id, provider_id)

    # ------------------------------------------------------------------ networks

    def _candidates(self, data: VirtualNetworkData) -> list[ProviderNetwork]:
        providers = self.providers
        if data.providerNetwork is not None:
            chosen = [p for p in providers if p.providerNetworkId == data.providerNetwork]
            if not chosen:
                raise invalid("providerNetwork", f"unknown provider network '{data.providerNetwork}'")
            if data.networkType is not None and chosen[0].networkType.value != data.networkType.value:
                raise invalid("networkType", f"provider network '{data.providerNetwork}' is "
                                             f"{chosen[0].networkType.value}, not {data.networkType.value}")
            network_type = chosen[0].networkType.value
        else:
            offered = [p.networkType.value for p in providers]
            if data.networkType is not None:
                network_type = data.networkType.value
            else:
                network_type = next((t for t in TYPE_PREFERENCE if t in offered), "vxlan")
            chosen = [p for p in providers if p.networkType.value == network_type]
            if not chosen:
                raise invalid("networkType", f"no provider network offers {network_type} networks")
        if data.segmentationId is not None:
            if network_type == "flat":
                raise invalid("segmentationId", "a flat network has no segmentation id")
            chosen = [p for p in chosen if ipam.segment_in_ranges(data.segmentationId, p.segmentationRanges)]
            if not chosen:
                raise invalid("segmentationId", f"{data.segmentationId} is outside the segmentation ranges of "
                                                f"the {network_type} provider networks")
            chosen = chosen[:1]
        return chosen

    def _pick_segment(self, session: Session, provider: ProviderNetwork, requested: int | None) -> int | None:
        """A free segmentation id of ``provider`` (0 for flat), or None when it has none left."""
        pid = provider.providerNetworkId
        used = select(NetworkSegmentRow.segmentation_id).where(NetworkSegmentRow.provider_network_id == pid)
        if provider.networkType.value == "flat":
            return None if session.scalar(used.where(NetworkSegmentRow.segmentation_id == 0)) is not None else 0
        if requested is not None:
            if session.scalar(used.where(NetworkSegmentRow.segmentation_id == requested)) is not None:
                raise ApiError(409, f"segmentationId {requested} of '{pid}' is in use", cause=Cause.CONFLICT,
                               invalid_params=[("segmentationId", "in use")])
            return requested
        count = session.scalar(select(func.count()).select_from(NetworkSegmentRow)
                               .where(NetworkSegmentRow.provider_network_id == pid)) or 0
        total = provider.segment_count()
        if count >= total:
            return None
        ranges = tuple((first, last) for first, last in provider.segmentationRanges)
        # A random start keeps concurrent allocations from all racing for the same lowest id.
        for window in ipam.scan_windows(ranges, secrets.randbelow(total)):
            taken = set(session.scalars(used.where(NetworkSegmentRow.segmentation_id.in_(window))))
            for value in window:
                if value not in taken:
                    return value
        return None

    def _reserve_network(self, group: str, data: VirtualNetworkData,
                         candidates: list[ProviderNetwork]) -> tuple[NetworkRow, ProviderNetwork, int]:
        with self.database.write() as session:
            for provider in candidates:
                segment = self._pick_segment(session, provider, data.segmentationId)
                if segment is not None:
                    break
            else:
                kind = candidates[0].networkType.value
                raise ipam.no_capacity(f"no free {kind} segment is left in "
                                       f"{', '.join(p.providerNetworkId for p in candidates)}")
            network_id = str(uuid.uuid4())
            now = utcnow()
            body: dict[str, Any] = {
                "networkResourceId": network_id,
                "subnetId": [],
                "bandwidth": data.bandwidth,
                "networkType": provider.networkType.value,
                "segmentationId": None if provider.networkType.value == "flat" else str(segment),
                "providerNetwork": provider.providerNetworkId,
                "networkQoS": [q.model_dump(mode="json") for q in data.networkQoS],
                "isShared": data.isShared,
                "operationalState": "ENABLED",
                "metadata": data.metadata or {},
                "mtu": provider.mtu,
                "resourceGroupId": group,
                "provisioningState": "ALLOCATING",
            }
            for optional in ("networkResourceName", "sharingCriteria"):
                if getattr(data, optional) is not None:
                    body[optional] = getattr(data, optional)
            if len(provider.zoneIds) == 1:
                body["zoneId"] = provider.zoneIds[0]
            row = NetworkRow(id=network_id, resource_group_id=group, is_shared=data.isShared, state="ALLOCATING",
                             provider_network_id=provider.providerNetworkId, created_at=now, updated_at=now,
                             version=1, body=body)
            session.add(NetworkSegmentRow(provider_network_id=provider.providerNetworkId, segmentation_id=segment,
                                          network_id=network_id))
            session.add(row)
            session.flush()
        return row, provider, segment

    async def create_network(self, principal: Principal, data: VirtualNetworkData) -> NetworkRow:
        group = self._group(principal, data.resourceGroupId)
        if data.isShared and not principal.is_admin:
            raise ApiError(403, "only an administrator may create a shared network", cause=Cause.FORBIDDEN,
                           invalid_params=[("isShared", "requires the admin scope")])
        candidates = self._candidates(data)
        row, provider, segment = await run_in_threadpool(
            self._with_retry, lambda: self._reserve_network(group, data, candidates))
        flat = provider.networkType.value == "flat"
        spec = NetworkSpec(
            network_id=row.id,
            name=data.networkResourceName or row.id,
            segmentation=Segmentation(provider.networkType.value, None if flat else segment,
                                      provider.physicalNetwork, provider.mtu, provider.providerNetworkId),
            shared=data.isShared,
            zone_ids=tuple(provider.zoneIds),
            metadata=dict(data.metadata or {}),
        )
        return await self._realise(NetworkRow, row, lambda: self.infra.driver.create_network(spec),
                                   provider.providerNetworkId)

    # ------------------------------------------------------------------ subnets

    def _network_for_update(self, session: Session, principal: Principal, network_id: str,
                            name: str = "networkId") -> NetworkRow:
        network = get_document(session, NetworkRow, network_id, visibility_of(principal), for_update=True)
        if network is None:
            raise _reference_not_found("network", name, network_id)
        if network.state != "ALLOCATED":
            raise conflict(f"network '{network_id}' is {network.state}")
        return network

    def _reserve_subnet(self, principal: Principal, group: str, data: NetworkSubnetData,
                        plan: ipam.SubnetPlan) -> SubnetRow:
        with self.database.write() as session:
            network = self._network_for_update(session, principal, data.networkId)
            if network.resource_group_id != group and not principal.is_admin:
                raise ApiError(403, f"network '{network.id}' is shared; only its owner adds subnets",
                               cause=Cause.FORBIDDEN, invalid_params=[("networkId", "not the owner")])
            others = list(session.scalars(select(SubnetRow).where(SubnetRow.network_id == network.id)))
            clash = ipam.overlapping(plan.network, [o.body["cidr"] for o in others])
            if clash is not None:
                raise invalid("cidr", f"{plan.network} overlaps {clash} of network '{network.id}'")
            subnet_id = str(uuid.uuid4())
            now = utcnow()
            body: dict[str, Any] = {
                "resourceId": subnet_id,
                "networkId": network.id,
                "ipVersion": data.ipVersion.value,
                "gatewayIp": str(plan.gateway) if plan.gateway is not None else None,
                "cidr": str(plan.network),
                "isDhcpEnabled": data.isDhcpEnabled,
                "addressPool": plan.pool_json(),
                "operationalState": "ENABLED",
                "metadata": data.metadata or {},
                "resourceGroupId": group,
                "provisioningState": "ALLOCATING",
            }
            if data.networkResourceName is not None:
                body["networkResourceName"] = data.networkResourceName
            row = SubnetRow(id=subnet_id, resource_group_id=group, network_id=network.id, state="ALLOCATING",
                            created_at=now, updated_at=now, version=1, body=body)
            session.add(row)
            if plan.gateway is not None:
                session.add(IpAllocationRow(subnet_id=subnet_id, address=str(plan.gateway), port_id=None,
                                            in_pool=plan.in_pool(plan.gateway)))
            _bump(network, {**network.body, "subnetId": [*network.body.get("subnetId", []), subnet_id]})
            session.flush()
        return row

    async def create_subnet(self, principal: Principal, data: NetworkSubnetData) -> SubnetRow:
        group = self._group(principal, data.resourceGroupId)
        version = 4 if data.ipVersion.value == "IPv4" else 6
        plan = ipam.plan_subnet(version, data.cidr, data.gatewayIp, "gatewayIp" in data.model_fields_set,
                                [(r.minAddress, r.maxAddress) for r in data.addressPool or []])
        row = await run_in_threadpool(self._with_retry, lambda: self._reserve_subnet(principal, group, data, plan))
        spec = SubnetSpec(
            subnet_id=row.id, network_id=data.networkId, cidr=str(plan.network), ip_version=version,
            gateway_ip=str(plan.gateway) if plan.gateway is not None else None, dhcp_enabled=data.isDhcpEnabled,
            allocation_pools=tuple((r["minAddress"], r["maxAddress"]) for r in plan.pool_json()),
        )
        return await self._realise(SubnetRow, row, lambda: self.infra.driver.create_subnet(spec))

    # ------------------------------------------------------------------ ports

    def _wanted_addresses(self, data: VirtualNetworkPortData,
                          subnets: Sequence[SubnetRow]) -> list[tuple[SubnetRow, ipam.IpAddress | None]]:
        if data.fixedIps is None:
            wanted: list[tuple[SubnetRow, ipam.IpAddress | None]] = []
            for version in ("IPv4", "IPv6"):
                first = next((s for s in subnets if s.body["ipVersion"] == version), None)
                if first is not None:
                    wanted.append((first, None))
            return wanted
        by_id = {s.id: s for s in subnets}
        wanted = []
        for index, item in enumerate(data.fixedIps):
            name = f"fixedIps/{index}"
            subnet = None
            if item.subnetId is not None:
                subnet = by_id.get(item.subnetId)
                if subnet is None:
                    raise invalid(f"{name}/subnetId", f"'{item.subnetId}' is not a subnet of network '{data.networkId}'")
            if item.ipAddress is None:
                if subnet is None:
                    raise invalid(name, "give subnetId, ipAddress or both")
                wanted.append((subnet, None))
                continue
            address = ipam.parse_address(f"{name}/ipAddress", item.ipAddress)
            if subnet is None:
                subnet = next((s for s in subnets if address in ipam.plan_from_document(s.body).network), None)
                if subnet is None:
                    raise invalid(f"{name}/ipAddress", f"{address} is in no subnet of network '{data.networkId}'")
            plan = ipam.plan_from_document(subnet.body)
            if address.version != plan.version:
                raise invalid(f"{name}/ipAddress", f"{address} is an IPv{address.version} address, subnet "
                                                   f"'{subnet.id}' is IPv{plan.version}")
            if address not in plan.network:
                raise invalid(f"{name}/ipAddress", f"{address} is outside {plan.network}")
            if not plan.in_pool(address):
                raise invalid(f"{name}/ipAddress", f"{address} is outside the address pool of subnet '{subnet.id}'")
            wanted.append((subnet, address))
        return wanted

    def _allocate_address(self, session: Session, subnet: SubnetRow, address: ipam.IpAddress | None,
                          port_id: str, name: str) -> str:
        plan = ipam.plan_from_document(subnet.body)
        used = select(IpAllocationRow.address).where(IpAllocationRow.subnet_id == subnet.id)
        if address is not None:
            text = str(address)
            if session.scalar(used.where(IpAllocationRow.address == text)) is not None:
                raise ApiError(409, f"address {text} of subnet '{subnet.id}' is in use", cause=Cause.CONFLICT,
                               invalid_params=[(name, "in use")])
            session.add(IpAllocationRow(subnet_id=subnet.id, address=text, port_id=port_id, in_pool=True))
            return text
        count = session.scalar(select(func.count()).select_from(IpAllocationRow).where(
            IpAllocationRow.subnet_id == subnet.id, IpAllocationRow.in_pool.is_(True))) or 0
        if count >= plan.pool_size():
            raise ipam.no_capacity(f"subnet '{subnet.id}' has no free address left")
        for window in ipam.scan_windows(plan.pools, count):
            texts = [ipam.to_text(value, plan.version) for value in window]
            taken = set(session.scalars(used.where(IpAllocationRow.address.in_(texts))))
            for text in texts:
                if text not in taken:
                    session.add(IpAllocationRow(subnet_id=subnet.id, address=text, port_id=port_id, in_pool=True))
                    return text
        raise ipam.no_capacity(f"subnet '{subnet.id}' has no free address left")

    def _reserve_port(self, principal: Principal, group: str, data: VirtualNetworkPortData) -> PortRow:
        with self.database.write() as session:
            network = self._network_for_update(session, principal, data.networkId)
            segment = network.body.get("segmentationId")
            if data.segmentId is not None and data.segmentId != segment:
                raise invalid("segmentId", f"must be the network's segmentation id ({segment})")
            if data.macAddress is not None:
                mac = ipam.normalise_mac("macAddress", data.macAddress)
                if session.scalar(select(PortRow.seq).where(PortRow.mac == mac)) is not None:
                    raise ApiError(409, f"MAC address {mac} is in use", cause=Cause.CONFLICT,
                                   invalid_params=[("macAddress", "in use")])
            else:
                mac = ipam.random_mac()
            subnet_ids = select(SubnetRow.id).where(SubnetRow.network_id == network.id)
            subnets = list(session.scalars(
                select(SubnetRow).where(SubnetRow.id.in_(subnet_ids), SubnetRow.state == "ALLOCATED")
                .order_by(SubnetRow.seq).with_for_update()))
            wanted = self._wanted_addresses(data, subnets)
            port_id = str(uuid.uuid4())
            fixed = []
            for index, (subnet, address) in enumerate(wanted):
                text = self._allocate_address(session, subnet, address, port_id, f"fixedIps/{index}/ipAddress")
                fixed.append({"subnetId": subnet.id, "ipAddress": text})
            now = utcnow()
            body: dict[str, Any] = {
                "resourceId": port_id,
                "networkId": network.id,
                "attachedResourceId": None,
                "portType": data.portType,
                "segmentId": segment,
                "operationalState": "ENABLED",
                "metadata": data.metadata or {},
                "macAddress": mac,
                "fixedIps": fixed,
                "resourceGroupId": group,
                "provisioningState": "ALLOCATING",
            }
            for optional in ("networkResourceName", "bandwidth"):
                if getattr(data, optional) is not None:
                    body[optional] = getattr(data, optional)
            row = PortRow(id=port_id, resource_group_id=group, network_id=network.id, state="ALLOCATING", mac=mac,
                          attached_resource_id=None, created_at=now, updated_at=now, version=1, body=body)
            session.add(row)
            session.flush()
        return row

    async def create_port(self, principal: Principal, data: VirtualNetworkPortData) -> PortRow:
        group = self._group(principal, data.resourceGroupId)
        row = await run_in_threadpool(self._with_retry, lambda: self._reserve_port(principal, group, data))
        spec = PortSpec(
            port_id=row.id, network_id=row.network_id, mac_address=row.mac,
            fixed_ips=tuple(FixedIp(f["subnetId"], f["ipAddress"]) for f in row.body["fixedIps"]),
            metadata=dict(data.metadata or {}),
        )
        return await self._realise(PortRow, row, lambda: self.infra.driver.create_port(spec))

    # ------------------------------------------------------------------ attach / detach (compute issue)

    def attach(self, port_id: str, resource_id: str) -> PortRow:
        """Record that ``resource_id`` (a compute or its NIC) uses the port; MODIFIED is announced."""
        with self.database.write() as session:
            row = session.scalar(select(PortRow).where(PortRow.id == port_id).with_for_update())
            if row is None:
                raise not_found("port", port_id)
            if row.state != "ALLOCATED":
                raise conflict(f"port '{port_id}' is {row.state}")
            if row.attached_resource_id not in (None, resource_id):
                raise conflict(f"port '{port_id}' is attached to '{row.attached_resource_id}'")
            if row.attached_resource_id != resource_id:
                row.attached_resource_id = resource_id
                _bump(row, {**row.body, "attachedResourceId": resource_id})
                self._announce(session, row, "PORT", "MODIFIED")
        return row

    def detach(self, port_id: str, resource_id: str | None = None) -> PortRow:
        with self.database.write() as session:
            row = session.scalar(select(PortRow).where(PortRow.id == port_id).with_for_update())
            if row is None:
                raise not_found("port", port_id)
            if resource_id is not None and row.attached_resource_id not in (None, resource_id):
                raise conflict(f"port '{port_id}' is attached to '{row.attached_resource_id}', not '{resource_id}'")
            if row.attached_resource_id is not None:
                row.attached_resource_id = None
                _bump(row, {**row.body, "attachedResourceId": None})
                self._announce(session, row, "PORT", "MODIFIED")
        return row

    # ------------------------------------------------------------------ update

    def update(self, model: type[Row], principal: Principal, resource_id: str, patch: dict[str, Any],
               if_match: str | None) -> Row:
        kind, resource_type = _KIND[model]
        with self.database.write() as session:
            row = get_document(session, model, resource_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found(kind, resource_id)
            self._check_owner(principal, row, kind)
            check_if_match(if_match, row)
            if row.state != "ALLOCATED":
                raise conflict(f"{kind} '{resource_id}' is {row.state}")
            body = dict(row.body)
            for key, value in patch.items():
                if key == "metadata":
                    body["metadata"] = _merge_metadata(body.get("metadata", {}), value or {})
                elif key == "isShared":
                    if not principal.is_admin:
                        raise ApiError(403, "only an administrator may change isShared", cause=Cause.FORBIDDEN,
                                       invalid_params=[("isShared", "requires the admin scope")])
                    body["isShared"] = bool(value)
                    row.is_shared = bool(value)  # type: ignore[union-attr]
                elif key == "networkQoS":
                    body["networkQoS"] = value or []
                elif value is None:
                    if key in ("operationalState",):
                        raise invalid(key, "cannot be removed")
                    body.pop(key, None)
                else:
                    body[key] = value
            if body != row.body:
                _bump(row, body)
                self._announce(session, row, resource_type, "MODIFIED")
        return row

    @staticmethod
    def _check_owner(principal: Principal, row: DocumentMixin, kind: str) -> None:
        if not principal.is_admin and row.resource_group_id != principal.resource_group_id:
            raise ApiError(403, f"{kind} '{row.id}' is shared but belongs to another resource group",
                           cause=Cause.FORBIDDEN)

    # ------------------------------------------------------------------ terminate

    def _begin_delete(self, model: type[Row], principal: Principal, resource_id: str, if_match: str | None) -> Row:
        kind = _KIND[model][0]
        with self.database.write() as session:
            self._lock_parent(session, model, resource_id)
            row = get_document(session, model, resource_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found(kind, resource_id)
            self._check_owner(principal, row, kind)
            check_if_match(if_match, row)
            if row.state not in ("ALLOCATED", "FAILED"):
                raise conflict(f"{kind} '{resource_id}' is {row.state}")
            if isinstance(row, NetworkRow):
                subnets = session.scalar(select(func.count()).select_from(SubnetRow)
                                         .where(SubnetRow.network_id == row.id)) or 0
                ports = session.scalar(select(func.count()).select_from(PortRow)
                                       .where(PortRow.network_id == row.id)) or 0
                if subnets or ports:
                    raise conflict(f"network '{resource_id}' still has {subnets} subnets and {ports} ports")
            elif isinstance(row, SubnetRow):
                users = session.scalar(select(func.count()).select_from(IpAllocationRow).where(
                    IpAllocationRow.subnet_id == row.id, IpAllocationRow.port_id.is_not(None))) or 0
                if users:
                    raise conflict(f"subnet '{resource_id}' still has addresses on {users} ports")
            elif isinstance(row, PortRow) and row.attached_resource_id is not None:
                raise conflict(f"port '{resource_id}' is attached to '{row.attached_resource_id}'")
            row.state = "TERMINATING"
            _bump(row, {**row.body, "provisioningState": "TERMINATING"})
        return row

    def _restore(self, model: type[Row], resource_id: str) -> None:
        with self.database.write() as session:
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is not None:
                row.state = "ALLOCATED"
                _bump(row, {**row.body, "provisioningState": "ALLOCATED"})

    def _finish_delete(self, model: type[Row], resource_id: str) -> None:
        with self.database.write() as session:
            self._lock_parent(session, model, resource_id)
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                return
            provider_id = row.provider_network_id if isinstance(row, NetworkRow) else None
            self._announce(session, row, _KIND[model][1], "REMOVED")
            self._release(session, row)
            if provider_id is not None:
                session.flush()
                self._announce_capacity(session, provider_id)

    async def delete(self, model: type[Row], principal: Principal, resource_id: str, if_match: str | None) -> None:
        row = await run_in_threadpool(self._begin_delete, model, principal, resource_id, if_match)
        driver = self.infra.driver
        call = {NetworkRow: driver.delete_network, SubnetRow: driver.delete_subnet, PortRow: driver.delete_port}[model]
        try:
            await call(row.id)
        except DriverError as exc:
            if exc.code is not DriverErrorCode.NOT_FOUND:  # already gone from the backend: fine
                await run_in_threadpool(self._restore, model, row.id)
                raise driver_error(exc) from exc
        await run_in_threadpool(self._finish_delete, model, row.id)

    async def terminate(self, principal: Principal, resource_ids: Sequence[str]) -> list[str]:
        """Best effort: ports first, then subnets, then networks, so a whole topology can go at once."""

        def kinds() -> dict[str, type[Row]]:
            found: dict[str, type[Row]] = {}
            with self.database.read() as session:
                for model in (PortRow, SubnetRow, NetworkRow):
                    rows = session.scalars(select(model.id).where(model.id.in_(list(resource_ids)),
                                                                  visibility_of(principal).clause(model)))
                    for resource_id in rows:
                        found.setdefault(resource_id, model)
            return found

        found = await run_in_threadpool(kinds)
        terminated: list[str] = []
        for model in (PortRow, SubnetRow, NetworkRow):
            for resource_id in dict.fromkeys(resource_ids):
                if found.get(resource_id) is not model:
                    continue
                try:
                    await self.delete(model, principal, resource_id, None)
                except ApiError as error:
                    log.info("terminate %s: %s", resource_id, error.detail)
                    continue
                terminated.append(resource_id)
        return terminated

    # ------------------------------------------------------------------ information

    def resource_types(self, zone_id: str | None = None) -> list[dict[str, Any]]:
        self._check_zone(zone_id)
        return [self._resource_type(p) for p in self.providers if zone_id is None or not p.zoneIds
                or zone_id in p.zoneIds]

    def resource_type(self, type_id: str) -> dict[str, Any]:
        provider = next((p for p in self.providers if p.providerNetworkId == type_id), None)
        if provider is None:
            raise not_found("network resource type", type_id)
        return self._resource_type(provider)

    @staticmethod
    def _resource_type(provider: ProviderNetwork) -> dict[str, Any]:
        return {
            "networkResourceTypeId": provider.providerNetworkId,
            "networkType": provider.networkType.value,
            "networkQoS": [],
            "physicalNetwork": provider.physicalNetwork,
            "mtu": provider.mtu,
            "zoneIds": list(provider.zoneIds),
            "segmentationRanges": [list(r) for r in provider.segmentationRanges],
        }

    def _check_zone(self, zone_id: str | None) -> None:
        if zone_id is not None and all(z.zoneId != zone_id for z in self.infra.inventory.zones):
            raise invalid("zoneId", f"zone '{zone_id}' does not exist")

    def _segment_capacity(self, session: Session, provider: ProviderNetwork) -> dict[str, Any]:
        pid = provider.providerNetworkId
        ranges: list[dict[str, Any]] = []
        if provider.networkType.value == "flat":
            used = session.scalar(select(func.count()).select_from(NetworkSegmentRow)
                                  .where(NetworkSegmentRow.provider_network_id == pid)) or 0
            ranges.append({"first": None, "last": None, "total": 1, "allocated": used, "available": 1 - used})
        for first, last in provider.segmentationRanges:
            used = session.scalar(select(func.count()).select_from(NetworkSegmentRow).where(
                NetworkSegmentRow.provider_network_id == pid,
                NetworkSegmentRow.segmentation_id.between(first, last))) or 0
            total = last - first + 1
            ranges.append({"first": first, "last": last, "total": total, "allocated": used, "available": total - used})
        return {
            "resourceTypeId": pid,
            "networkType": provider.networkType.value,
            "total": sum(r["total"] for r in ranges),
            "allocated": sum(r["allocated"] for r in ranges),
            "available": sum(r["available"] for r in ranges),
            "ranges": ranges,
        }

    def capacity(self, principal: Principal, zone_id: str | None = None,
                 resource_type_id: str | None = None) -> dict[str, Any]:
        self._check_zone(zone_id)
        providers = [p for p in self.providers if zone_id is None or not p.zoneIds or zone_id in p.zoneIds]
        if resource_type_id is not None:
            if all(p.providerNetworkId != resource_type_id for p in self.providers):
                raise invalid("resourceTypeId", f"unknown network resource type '{resource_type_id}'")
            providers = [p for p in providers if p.providerNetworkId == resource_type_id]
        wanted = {p.providerNetworkId for p in providers}
        with self.database.read() as session:
            segments = [self._segment_capacity(session, p) for p in providers]
            visibility = visibility_of(principal)
            rows = session.execute(
                select(SubnetRow, NetworkRow.provider_network_id)
                .join(NetworkRow, NetworkRow.id == SubnetRow.network_id)
                .where(visibility.clause(SubnetRow)).order_by(SubnetRow.seq).limit(1000)).all()
            counts = dict(session.execute(
                select(IpAllocationRow.subnet_id, func.count()).where(IpAllocationRow.in_pool.is_(True))
                .group_by(IpAllocationRow.subnet_id)).all())
        addresses = []
        for subnet, provider_id in rows:
            if provider_id not in wanted:
                continue
            total = ipam.plan_from_document(subnet.body).pool_size()
            used = int(counts.get(subnet.id, 0))
            addresses.append({"subnetId": subnet.id, "networkId": subnet.network_id,
                              "ipVersion": subnet.body["ipVersion"], "cidr": subnet.body["cidr"],
                              "total": ipam.capped(total), "allocated": used,
                              "available": ipam.capped(total - used)})
        return {"zoneId": zone_id, "resourceTypeId": resource_type_id, "segments": segments,
                "addresses": addresses}

    # ------------------------------------------------------------------ affinity groups

    def create_group(self, principal: Principal, data: NetworkAffinityGroupCreate) -> NetworkAffinityGroupRow:
        """Groups are recorded and queryable; see docs/network.md for what they do (not yet enforced)."""
        group_id = str(uuid.uuid4())
        body = data.model_dump(mode="json", exclude_none=True)
        body.update(groupId=group_id, metadata=data.metadata or {}, resourceGroupId=principal.resource_group_id)
        now = utcnow()
        row = NetworkAffinityGroupRow(id=group_id, resource_group_id=principal.resource_group_id,
                                      created_at=now, updated_at=now, version=1, body=body)
        with self.database.write() as session:
            session.add(row)
        return row

    def delete_group(self, principal: Principal, group_id: str, if_match: str | None) -> None:
        with self.database.write() as session:
            row = get_document(session, NetworkAffinityGroupRow, group_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("network affinity group", group_id)
            check_if_match(if_match, row)
            session.delete(row)

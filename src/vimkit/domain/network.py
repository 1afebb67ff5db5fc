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

The service is assembled from :mod:`.network_common` (schemas, notifications, the shared
allocation steps), :mod:`.network_ports`, :mod:`.network_info` and :mod:`.network_affinity`;
this module holds networks, subnets, updates, attach / detach and termination.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vimkit.api.problems import ApiError, Cause, conflict, invalid, not_found
from vimkit.auth.principal import Principal
from vimkit.domain import ipam
from vimkit.domain.infrastructure import driver_error
from vimkit.domain.metadata import merge_metadata
from vimkit.domain.network_common import (  # the schemas are re-exported for the routes
    AFFINITY_GROUP_SCHEMA,
    NETWORK_SCHEMA,
    PORT_SCHEMA,
    SUBNET_SCHEMA,
    TYPE_PREFERENCE,
    KIND,
    Row,
    bump,
    log,
)
from vimkit.domain.network_info import NetworkInformation
from vimkit.domain.network_ports import PortAllocation
from vimkit.drivers.base import (
    DriverError,
    DriverErrorCode,
    NetworkSpec,
    Segmentation,
    SubnetSpec,
)
from vimkit.infra.inventory import ProviderNetwork
from vimkit.models.network import NetworkSubnetData, VirtualNetworkData
from vimkit.store.group_commit import GroupCommit
from vimkit.store.network_tables import (
    IpAllocationRow,
    NetworkRow,
    NetworkSegmentRow,
    PortRow,
    SubnetRow,
)
from vimkit.store.repository import (
    check_if_match,
    get_document,
    utcnow,
    visibility_of,
)

__all__ = ["AFFINITY_GROUP_SCHEMA", "NETWORK_SCHEMA", "PORT_SCHEMA", "SUBNET_SCHEMA", "NetworkService"]


class NetworkService(PortAllocation, NetworkInformation):
    _attach_commits: GroupCommit | None = None  # created on first use, in the event loop

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

    def _reserve_network(self, principal: Principal, group: str, data: VirtualNetworkData,
                         candidates: list[ProviderNetwork]) -> tuple[NetworkRow, ProviderNetwork, int]:
        with self.database.write() as session:
            rules = self._affinity_rules(session, principal, data.affinityOrAntiAffinityConstraints, for_port=False)
            candidates = self._place(rules, candidates)
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
            if data.affinityOrAntiAffinityConstraints:
                body["affinityOrAntiAffinityConstraints"] = [
                    c.model_dump(mode="json", exclude_none=True) for c in data.affinityOrAntiAffinityConstraints]
            self._join_groups(session, rules, network_id, "NETWORK", provider.providerNetworkId)
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
            self._with_retry, lambda: self._reserve_network(principal, group, data, candidates))
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
            gateway_in_pool = plan.gateway is not None and plan.in_pool(plan.gateway)
            # The cursor starts after the gateway when the pool begins with it (the usual case).
            row = SubnetRow(id=subnet_id, resource_group_id=group, network_id=network.id, state="ALLOCATING",
                            created_at=now, updated_at=now, version=1, body=body, pool_used=int(gateway_in_pool),
                            pool_cursor=int(gateway_in_pool and int(plan.gateway) == plan.pools[0][0]))  # type: ignore[arg-type]
            session.add(row)
            if plan.gateway is not None:
                session.add(IpAllocationRow(subnet_id=subnet_id, address=str(plan.gateway), port_id=None,
                                            in_pool=gateway_in_pool))
            bump(network, {**network.body, "subnetId": [*network.body.get("subnetId", []), subnet_id]})
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

    # ------------------------------------------------------------------ attach / detach (compute issue)

    def attach(self, port_id: str, resource_id: str) -> PortRow:
        """Record that ``resource_id`` (a compute or its NIC) uses the port; MODIFIED is announced."""
        with self.database.write() as session:
            return self._attach_in(session, port_id, resource_id)

    async def attach_soon(self, port_id: str, resource_id: str) -> PortRow:
        """:meth:`attach` through a group commit (a cluster's nodes plug their ports all at once)."""
        if self._attach_commits is None:
            self._attach_commits = GroupCommit(self.database)
        return await self._attach_commits.run(lambda session: self._attach_in(session, port_id, resource_id))

    def _attach_in(self, session: Session, port_id: str, resource_id: str) -> PortRow:
        row = session.scalar(select(PortRow).where(PortRow.id == port_id).with_for_update())
        if row is None:
            raise not_found("port", port_id)
        if row.state != "ALLOCATED":
            raise conflict(f"port '{port_id}' is {row.state}")
        if row.attached_resource_id not in (None, resource_id):
            raise conflict(f"port '{port_id}' is attached to '{row.attached_resource_id}'")
        if row.attached_resource_id != resource_id:
            row.attached_resource_id = resource_id
            bump(row, {**row.body, "attachedResourceId": resource_id})
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
                bump(row, {**row.body, "attachedResourceId": None})
                self._announce(session, row, "PORT", "MODIFIED")
        return row

    # ------------------------------------------------------------------ update

    def update(self, model: type[Row], principal: Principal, resource_id: str, patch: dict[str, Any],
               if_match: str | None) -> Row:
        kind, resource_type = KIND[model]
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
                    body["metadata"] = merge_metadata(body.get("metadata", {}), value or {})
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
                bump(row, body)
                self._announce(session, row, resource_type, "MODIFIED")
        return row

    # ------------------------------------------------------------------ terminate

    def _begin_delete(self, model: type[Row], principal: Principal, resource_id: str, if_match: str | None) -> Row:
        kind = KIND[model][0]
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
            bump(row, {**row.body, "provisioningState": "TERMINATING"})
        return row

    def _restore(self, model: type[Row], resource_id: str) -> None:
        with self.database.write() as session:
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is not None:
                row.state = "ALLOCATED"
                bump(row, {**row.body, "provisioningState": "ALLOCATED"})

    def _finish_delete(self, model: type[Row], resource_id: str) -> None:
        with self.database.write() as session:
            self._lock_parent(session, model, resource_id)
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                return
            provider_id = row.provider_network_id if isinstance(row, NetworkRow) else None
            self._announce(session, row, KIND[model][1], "REMOVED")
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

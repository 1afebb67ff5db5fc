"""Port allocation: MAC, addresses from the subnets' pools, the driver call."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vimkit.api.problems import ApiError, Cause, invalid
from vimkit.auth.principal import Principal
from vimkit.domain import ipam
from vimkit.domain.network_common import NetworkBase
from vimkit.drivers.base import FixedIp, PortSpec
from vimkit.models.network import VirtualNetworkPortData
from vimkit.store.network_tables import IpAllocationRow, PortRow, SubnetRow
from vimkit.store.repository import utcnow


class PortAllocation(NetworkBase):
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

"""Network information (IFA 005 7.4.3): resource types (provider networks) and capacity."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from vimkit.api.problems import invalid, not_found
from vimkit.auth.principal import Principal
from vimkit.domain import ipam
from vimkit.domain.network_common import NetworkBase
from vimkit.infra.inventory import ProviderNetwork
from vimkit.store.network_tables import NetworkRow, SubnetRow
from vimkit.store.repository import visibility_of


class NetworkInformation(NetworkBase):
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
        addresses = []
        for subnet, provider_id in rows:
            if provider_id not in wanted:
                continue
            total = ipam.plan_from_document(subnet.body).pool_size()
            used = subnet.pool_used
            addresses.append({"subnetId": subnet.id, "networkId": subnet.network_id,
                              "ipVersion": subnet.body["ipVersion"], "cidr": subnet.body["cidr"],
                              "total": ipam.capped(total), "allocated": used,
                              "available": ipam.capped(total - used)})
        return {"zoneId": zone_id, "resourceTypeId": resource_type_id, "segments": segments,
                "addresses": addresses}

"""Simulated networks, subnets and ports (Neutron's rules for what may be deleted when)."""

from __future__ import annotations

from vimkit.drivers.base import (
    DriverErrorCode,
    LinkState,
    NetworkInfo,
    NetworkSpec,
    NicInfo,
    PortInfo,
    PortSpec,
    SubnetInfo,
    SubnetSpec,
)
from vimkit.drivers.sim.core import SimCore, _err
from vimkit.drivers.sim.state import (
    SimNetwork,
    SimPort,
    SimSubnet,
)


class NetworkOps(SimCore):
    def _mac_owner(self, network_id: str, mac: str) -> str | None:
        """The port of ``network_id`` using ``mac`` (lower case), from an index instead of a scan of
        every port; an entry is checked against the state before it is believed."""
        index: dict[tuple[str, str], str] | None = self.__dict__.get("_macs")
        if index is None:
            index = self.__dict__["_macs"] = {(p.network_id, p.mac_address.lower()): p.port_id
                                              for p in self._state.ports.values()}
        port_id = index.get((network_id, mac))
        if port_id is None:
            return None
        port = self._state.ports.get(port_id)
        if port is None or port.network_id != network_id or port.mac_address.lower() != mac:
            del index[(network_id, mac)]
            return None
        return port_id

    # ------------------------------------------------------------------ networks

    async def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        await self._enter("create_network", spec.network_id)
        if spec.network_id in self._state.networks:
            raise _err(DriverErrorCode.CONFLICT, f"network {spec.network_id} already exists")
        segmentation = spec.segmentation
        if segmentation.network_type not in ("vlan", "vxlan", "flat"):
            raise _err(DriverErrorCode.UNSUPPORTED, f"network type {segmentation.network_type} is not supported")
        for other in self._state.networks.values():
            seg = other.segmentation
            same_wire = segmentation.network_type == "vxlan" or seg["physical_network"] == segmentation.physical_network
            if (segmentation.segmentation_id is not None and seg["network_type"] == segmentation.network_type
                    and seg["segmentation_id"] == segmentation.segmentation_id and same_wire):
                raise _err(DriverErrorCode.CONFLICT,
                           f"segment {segmentation.network_type}/{segmentation.segmentation_id} "
                           f"is used by network {other.network_id}")
        self._state.networks[spec.network_id] = SimNetwork(spec.network_id, spec.name, {
            "network_type": segmentation.network_type, "segmentation_id": segmentation.segmentation_id,
            "physical_network": segmentation.physical_network, "mtu": segmentation.mtu,
            "provider_network_id": segmentation.provider_network_id,
        }, spec.shared)
        self._save(self._state.networks[spec.network_id])
        return NetworkInfo(spec.network_id, segmentation, True, f"sim-{spec.network_id}")

    async def delete_network(self, network_id: str) -> None:
        """Deleting a network removes its subnets; it refuses while ports remain (Neutron's rule)."""
        await self._enter("delete_network", network_id)
        if network_id not in self._state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {network_id} does not exist")
        ports = [p.port_id for p in self._state.ports.values() if p.network_id == network_id]
        if ports:
            raise _err(DriverErrorCode.CONFLICT, f"network {network_id} still has {len(ports)} ports")
        subnets = [s for s in self._state.subnets.values() if s.network_id == network_id]
        for subnet in subnets:
            del self._state.subnets[subnet.subnet_id]
        network = self._state.networks.pop(network_id)
        self._save(network, *subnets)

    async def create_subnet(self, spec: SubnetSpec) -> SubnetInfo:
        await self._enter("create_subnet", spec.subnet_id, spec.network_id)
        if spec.network_id not in self._state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {spec.network_id} does not exist")
        if spec.subnet_id in self._state.subnets:
            raise _err(DriverErrorCode.CONFLICT, f"subnet {spec.subnet_id} already exists")
        self._state.subnets[spec.subnet_id] = SimSubnet(spec.subnet_id, spec.network_id, spec.cidr, spec.ip_version,
                                                        spec.gateway_ip)
        self._save(self._state.subnets[spec.subnet_id])
        return SubnetInfo(spec.subnet_id, spec.network_id, f"sim-{spec.subnet_id}")

    async def delete_subnet(self, subnet_id: str) -> None:
        await self._enter("delete_subnet", subnet_id)
        if subnet_id not in self._state.subnets:
            raise _err(DriverErrorCode.NOT_FOUND, f"subnet {subnet_id} does not exist")
        users = [p.port_id for p in self._state.ports.values() if any(ip[0] == subnet_id for ip in p.fixed_ips)]
        if users:
            raise _err(DriverErrorCode.CONFLICT, f"subnet {subnet_id} still has addresses on {len(users)} ports")
        self._save(self._state.subnets.pop(subnet_id))

    async def create_port(self, spec: PortSpec) -> PortInfo:
        await self._enter("create_port", spec.port_id, spec.network_id)
        state = self._state
        if spec.network_id not in state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {spec.network_id} does not exist")
        if spec.port_id in state.ports:
            raise _err(DriverErrorCode.CONFLICT, f"port {spec.port_id} already exists")
        mac = spec.mac_address.lower()
        other = self._mac_owner(spec.network_id, mac)
        if other is not None:
            raise _err(DriverErrorCode.CONFLICT, f"MAC {spec.mac_address} is used by port {other}")
        for fixed in spec.fixed_ips:
            if fixed.subnet_id not in state.subnets:
                raise _err(DriverErrorCode.NOT_FOUND, f"subnet {fixed.subnet_id} does not exist")
        port = SimPort(spec.port_id, spec.network_id, spec.mac_address,
                       [[f.subnet_id, f.ip_address] for f in spec.fixed_ips])
        state.ports[spec.port_id] = port
        self.__dict__["_macs"][(spec.network_id, mac)] = spec.port_id
        self._save(port)
        return self._port_info(port)

    async def delete_port(self, port_id: str) -> None:
        await self._enter("delete_port", port_id)
        port = self._port(port_id)
        if port.compute_id is not None:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is plugged into compute {port.compute_id}")
        del self._state.ports[port_id]
        self._save(port)

    async def list_ports(self) -> list[PortInfo]:
        return [self._port_info(p) for p in self._state.ports.values()]

    async def plug_port(self, port_id: str, compute_id: str) -> NicInfo:
        await self._enter("plug_port", port_id, compute_id)
        port = self._port(port_id)
        compute = self._reachable(self._compute(compute_id))
        if port.compute_id is not None:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is plugged into compute {port.compute_id}")
        used = {self._state.ports[p].device for p in compute.ports if p in self._state.ports}
        port.compute_id = compute_id
        port.device = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        compute.ports.append(port_id)
        compute.counters[port_id] = [0, 0, 0, 0]
        self._save(port, compute)
        return NicInfo(port_id, port.device, LinkState.UP if self._link_up(port) else LinkState.DOWN)

    async def unplug_port(self, port_id: str, compute_id: str) -> None:
        await self._enter("unplug_port", port_id, compute_id)
        port = self._port(port_id)
        compute = self._reachable(self._compute(compute_id))
        if port.compute_id != compute_id:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is not plugged into compute {compute_id}")
        port.compute_id = port.device = None
        compute.ports.remove(port_id)
        compute.counters.pop(port_id, None)
        self._save(port, compute)

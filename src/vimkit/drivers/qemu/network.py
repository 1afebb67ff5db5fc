"""Networks as bridges in the VIM's namespace, ports as taps, NIC hot-plug over QMP."""

from __future__ import annotations

import asyncio

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
from vimkit.drivers.qemu.core import QemuCore, R, _err
from vimkit.drivers.qemu.host import CommandError
from vimkit.drivers.qemu.state import NetworkRecord, PortRecord, SubnetRecord
from vimkit.drivers.qemu.vm import Vm, nic_id

DEVICE_DELETE_TIMEOUT = 15.0


async def unplug_device(vm: Vm, device_id: str, timeout: float = DEVICE_DELETE_TIMEOUT) -> None:
    """``device_del`` completes when the guest has released the device (ACPI eject):
    wait for DEVICE_DELETED before removing its backend."""
    if vm.qmp is None:
        await vm.connect()
    assert vm.qmp is not None
    with vm.qmp.listener("DEVICE_DELETED") as listener:
        await vm.execute("device_del", {"id": device_id})

        async def deleted() -> None:
            async for event in listener:
                if event.get("data", {}).get("device") == device_id:
                    return
        try:
            await asyncio.wait_for(deleted(), timeout)
        except asyncio.TimeoutError:
            raise _err(DriverErrorCode.TIMEOUT, f"the guest of {vm.compute_id} did not release {device_id} "
                                                f"within {timeout:.0f} s", retryable=True) from None


class NetworkOps(QemuCore):
    async def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        if spec.network_id in self._state.networks:
            raise _err(DriverErrorCode.CONFLICT, f"network {spec.network_id} already exists")
        seg = spec.segmentation
        if seg.network_type not in ("vlan", "vxlan", "flat"):
            raise _err(DriverErrorCode.UNSUPPORTED, f"network type {seg.network_type} is not supported")
        for other in self._state.networks.values():
            if (seg.segmentation_id is not None and other.network_type == seg.network_type
                    and other.segmentation_id == seg.segmentation_id
                    and (seg.network_type == "vxlan" or other.physical_network == seg.physical_network)):
                raise _err(DriverErrorCode.CONFLICT, f"segment {seg.network_type}/{seg.segmentation_id} "
                                                     f"is used by network {other.network_id}")
        async with self._lock(spec.network_id):
            try:
                details = await self.namespace.add_network(spec.network_id, seg.network_type, seg.segmentation_id,
                                                           seg.physical_network, seg.mtu)
            except CommandError as exc:
                await self.namespace.remove_network(spec.network_id)
                raise _err(DriverErrorCode.INTERNAL, f"cannot create network {spec.network_id}: {exc}") from exc
            self._state.networks[spec.network_id] = NetworkRecord(spec.network_id, seg.network_type,
                                                                  seg.segmentation_id, seg.physical_network,
                                                                  seg.mtu, details)
            self._save()
        return NetworkInfo(spec.network_id, seg, True, f"{self.namespace.name}/{details['bridge']}")

    async def delete_network(self, network_id: str) -> None:
        if network_id not in self._state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {network_id} does not exist")
        ports = [p.port_id for p in self._state.ports.values() if p.network_id == network_id]
        if ports:
            raise _err(DriverErrorCode.CONFLICT, f"network {network_id} still has {len(ports)} ports")
        async with self._lock(network_id):
            await self.namespace.remove_network(network_id)
            for subnet_id in [s.subnet_id for s in self._state.subnets.values() if s.network_id == network_id]:
                del self._state.subnets[subnet_id]
            del self._state.networks[network_id]
            self._save()

    async def create_subnet(self, spec: SubnetSpec) -> SubnetInfo:
        """Remembered only: the guests get their addresses on the kernel command line, so there is
        no DHCP server to configure (and the namespace routes nothing between subnets)."""
        if spec.network_id not in self._state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {spec.network_id} does not exist")
        if spec.subnet_id in self._state.subnets:
            raise _err(DriverErrorCode.CONFLICT, f"subnet {spec.subnet_id} already exists")
        self._state.subnets[spec.subnet_id] = SubnetRecord(spec.subnet_id, spec.network_id, spec.cidr, spec.gateway_ip)
        self._save()
        return SubnetInfo(spec.subnet_id, spec.network_id, None)

    async def delete_subnet(self, subnet_id: str) -> None:
        if subnet_id not in self._state.subnets:
            raise _err(DriverErrorCode.NOT_FOUND, f"subnet {subnet_id} does not exist")
        users = [p.port_id for p in self._state.ports.values() if any(ip[0] == subnet_id for ip in p.fixed_ips)]
        if users:
            raise _err(DriverErrorCode.CONFLICT, f"subnet {subnet_id} still has addresses on {len(users)} ports")
        del self._state.subnets[subnet_id]
        self._save()

    async def create_port(self, spec: PortSpec) -> PortInfo:
        """A record only: the tap is made when the port is plugged (a tap without a VM is useless)."""
        if spec.network_id not in self._state.networks:
            raise _err(DriverErrorCode.NOT_FOUND, f"network {spec.network_id} does not exist")
        if spec.port_id in self._state.ports:
            raise _err(DriverErrorCode.CONFLICT, f"port {spec.port_id} already exists")
        mac = spec.mac_address.lower()
        for other in self._state.ports.values():
            if other.network_id == spec.network_id and other.mac_address.lower() == mac:
                raise _err(DriverErrorCode.CONFLICT, f"MAC {spec.mac_address} is used by port {other.port_id}")
        for fixed in spec.fixed_ips:
            if fixed.subnet_id not in self._state.subnets:
                raise _err(DriverErrorCode.NOT_FOUND, f"subnet {fixed.subnet_id} does not exist")
        port = PortRecord(spec.port_id, spec.network_id, spec.mac_address,
                          [[f.subnet_id, f.ip_address] for f in spec.fixed_ips])
        self._state.ports[spec.port_id] = port
        self._save()
        return self._port_info(port)

    async def delete_port(self, port_id: str) -> None:
        port = self._port(port_id)
        if port.compute_id is not None:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is plugged into compute {port.compute_id}")
        await self.namespace.remove_tap(port_id)
        del self._state.ports[port_id]
        self._save()

    async def list_ports(self) -> list[PortInfo]:
        return [self._port_info(p) for p in self._state.ports.values()]

    async def plug_port(self, port_id: str, compute_id: str) -> NicInfo:
        """NIC hot-plug: tap, ``netdev_add`` and ``device_add``, then the NIC's address from the
        VIM's IPAM over the guest channel, waiting (bounded) for the guest to confirm. A stopped
        compute gets the NIC on its next start's command line and config drive."""
        port = self._port(port_id)
        vm = self._vm(compute_id)
        if port.compute_id is not None:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is plugged into compute {port.compute_id}")
        async with self._lock(compute_id):
            network = self._state.networks[port.network_id]
            tap = await self.namespace.add_tap(port_id, port.network_id, network.mtu)
            if vm.alive():
                ident = nic_id(port_id)
                await vm.execute("netdev_add", {"type": "tap", "id": ident, "ifname": tap, "script": "no",
                                                "downscript": "no", "vhost": False})
                await vm.execute("device_add", {"driver": "virtio-net-pci", "netdev": ident,
                                                "mac": port.mac_address.lower(), "id": f"dev-{ident}"})
            used = {self._state.ports[p].device for p in vm.record.ports if p in self._state.ports}
            port.compute_id = compute_id
            port.device = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
            vm.record.ports.append(port_id)
            self._save()
            if vm.alive() and vm.record.state == R.RUNNING.value and vm.record.kernel:
                await self._agent_configure(vm, port)
            return NicInfo(port_id, port.device, LinkState.UP)

    async def unplug_port(self, port_id: str, compute_id: str) -> None:
        port = self._port(port_id)
        vm = self._vm(compute_id)
        if port.compute_id != compute_id:
            raise _err(DriverErrorCode.CONFLICT, f"port {port_id} is not plugged into compute {compute_id}")
        async with self._lock(compute_id):
            if vm.alive():
                if vm.record.state != R.RUNNING.value:
                    raise _err(DriverErrorCode.CONFLICT, "a paused guest cannot release a NIC: unpause it first")
                ident = nic_id(port_id)
                await unplug_device(vm, f"dev-{ident}")
                await vm.execute("netdev_del", {"id": ident})
            await self.namespace.remove_tap(port_id)
            port.compute_id = port.device = None
            port.tap_epoch += 1
            vm.record.ports.remove(port_id)
            self._save()

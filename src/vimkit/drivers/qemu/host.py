"""The host side: commands, the VIM's network namespace, bridges, VXLAN devices and taps.

Everything network-related lives in one namespace the VIM creates and owns; nothing is ever
configured in the root namespace and no device here has a route off the machine. QEMU itself runs
inside the namespace (``nsenter --net``) because ``-netdev tap,ifname=`` opens the tap in the
namespace of the QEMU process; the namespace changes nothing else for it (sockets and files are
paths on the same file system).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

from vimkit.drivers.model import DriverError, DriverErrorCode
from vimkit.drivers.qemu import netlink

VXLAN_PORT = 4789


class CommandError(Exception):
    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)}: exit {code}: {stderr.strip()}")
        self.code = code
        self.stderr = stderr


async def run(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE)
    out, err = await process.communicate(None if stdin is None else stdin.encode())
    if check and process.returncode != 0:
        raise CommandError(list(argv), process.returncode or 0, err.decode(errors="replace"))
    return out.decode(errors="replace")


def short(object_id: str, length: int = 10) -> str:
    """Interface names are limited to 15 characters: ids are hashed to a fixed width."""
    return hashlib.sha1(object_id.encode()).hexdigest()[:length]


def bridge_name(network_id: str) -> str:
    return f"br-{short(network_id)}"


def vxlan_name(network_id: str) -> str:
    return f"vx-{short(network_id)}"


def vlan_name(network_id: str) -> str:
    return f"vl-{short(network_id)}"


def tap_name(port_id: str) -> str:
    return f"tp-{short(port_id)}"


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = asyncio.Lock()
        self._vlan_ok: bool | None = None

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    def exists(self) -> bool:
        return self.path.exists()

    async def ensure(self) -> None:
        async with self._lock:
            if not self.exists():
                try:
                    await run("ip", "netns", "add", self.name)
                except CommandError as exc:
                    raise DriverError(DriverErrorCode.BACKEND_UNAVAILABLE,
                                      f"cannot create network namespace {self.name}: {exc}") from exc
            # VXLAN devices bind to the namespace's loopback: it must be up.
            await self.ip("link", "set", "lo", "up")

    async def delete(self) -> None:
        if self.exists():
            await run("ip", "netns", "delete", self.name, check=False)

    async def ip(self, *args: str, check: bool = True) -> str:
        return await run("ip", "-n", self.name, *args, check=check)

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (and nothing else changed)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    async def links(self) -> dict[str, dict]:
        if not self.exists():
            return {}
        out = await self.ip("-s", "-j", "link", "show", check=False)
        try:
            return {link["ifname"]: link for link in json.loads(out or "[]")}
        except ValueError:
            return {}

    async def has_link(self, name: str) -> bool:
        return bool(await self.ip("link", "show", "dev", name, check=False))

    async def delete_link(self, name: str) -> None:
        if self.exists():
            await self.ip("link", "delete", "dev", name, check=False)

    # ------------------------------------------------------------------ networks

    async def add_network(self, network_id: str, network_type: str, segment: int | None,
                          physical_network: str | None, mtu: int) -> dict[str, str]:
        """A bridge, plus the segment's uplink: a VXLAN device for vxlan, an 802.1Q device on a
        per-physnet dummy uplink for vlan where the kernel has 802.1Q. One host needs no uplink for
        guests to reach each other, so a VLAN network on a kernel without 802.1Q keeps working as a
        host-local bridge (reported in the details)."""
        await self.ensure()
        bridge = bridge_name(network_id)
        details = {"bridge": bridge, "namespace": self.name, "uplink": "none"}
        if not await self.has_link(bridge):
            await self.ip("link", "add", "name", bridge, "mtu", str(mtu), "type", "bridge")
        await self.ip("link", "set", bridge, "up")
        if network_type == "vxlan" and segment is not None:
            vx = vxlan_name(network_id)
            if not await self.has_link(vx):
                await self.ip("link", "add", vx, "mtu", str(mtu), "type", "vxlan", "id", str(segment),
                              "local", "127.0.0.1", "dstport", str(VXLAN_PORT), "nolearning")
            await self.ip("link", "set", vx, "master", bridge, "up")
            details["uplink"] = vx
        elif network_type == "vlan" and segment is not None:
            physnet = f"ph-{short(physical_network or 'physnet', 8)}"
            if not await self.has_link(physnet):
                await self.ip("link", "add", physnet, "type", "dummy")
                await self.ip("link", "set", physnet, "up")
            vl = vlan_name(network_id)
            try:
                if not await self.has_link(vl):
                    await self.ip("link", "add", "link", physnet, "name", vl, "type", "vlan", "id", str(segment))
                await self.ip("link", "set", vl, "master", bridge, "up")
                details["uplink"] = vl
            except CommandError:
                details["uplink"] = "none (this kernel has no 802.1Q)"
        return details

    async def remove_network(self, network_id: str) -> None:
        for name in (vxlan_name(network_id), vlan_name(network_id), bridge_name(network_id)):
            await self.delete_link(name)

    async def add_tap(self, port_id: str, network_id: str, mtu: int) -> str:
        """The port's tap on the network's bridge, up: made in-process (see netlink.py)."""
        tap = tap_name(port_id)
        try:
            netlink.create_tap(str(self.path), tap, bridge_name(network_id), int(mtu))
        except OSError as exc:
            raise CommandError(["create tap", tap, "on", bridge_name(network_id)], exc.errno or 1, str(exc)) from exc
        return tap

    async def remove_tap(self, port_id: str) -> None:
        await self.delete_link(tap_name(port_id))


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether ``pid`` runs and is ours (its command line contains ``marker``): pids are reused."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if marker is not None:
            return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        return True
    except (OSError, IndexError):
        return False


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None

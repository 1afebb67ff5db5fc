"""The config drive: a small read-only iso9660 disk (label ``config-2``, OpenStack's layout) that
carries a compute's ``userData`` and metadata to its guest.

``openstack/latest/`` holds ``meta_data.json`` (uuid, name, hostname, meta), ``user_data`` (the
compute's userData unchanged) and ``network_data.json`` (links, networks and routes from the
VIM's IPAM, as Nova writes it), so cloud-init's ConfigDrive data source reads it as it is. Built
with ``genisoimage`` (Debian package ``genisoimage``) before every boot: the NICs may have
changed. The test guest (scripts/build-test-guest.sh) mounts it and serves its files.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vimkit.drivers.qemu.host import run

LABEL = "config-2"
#: Whatever the API accepts (65 536 characters of userData) fits: UTF-8 takes at most 4 bytes each.
MAX_USER_DATA = 256 * 1024


def network_data(nics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``nics``: ``{"id", "mac", "mtu", "address": "a.b.c.d/len" | None, "gateway": ... | None}``."""
    links, networks = [], []
    for index, nic in enumerate(nics):
        link_id = f"tap{index}"
        links.append({"id": link_id, "vif_id": nic["id"], "type": "phy", "ethernet_mac_address": nic["mac"],
                      "mtu": nic.get("mtu")})
        if nic.get("address"):
            interface = ipaddress.ip_interface(nic["address"])
            network: dict[str, Any] = {"id": f"network{index}", "link": link_id, "network_id": nic.get("network_id"),
                                       "type": "ipv4", "ip_address": str(interface.ip),
                                       "netmask": str(interface.network.netmask), "routes": []}
            if nic.get("gateway"):
                network["routes"].append({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": nic["gateway"]})
            networks.append(network)
    return {"links": links, "networks": networks, "services": []}


async def build(path: Path, compute_id: str, name: str, metadata: Mapping[str, str], user_data: bytes | None,
                nics: Sequence[Mapping[str, Any]], genisoimage: str = "genisoimage") -> Path:
    """Write the config drive image to ``path`` (atomically) and return it."""
    meta = {"uuid": compute_id, "name": name, "hostname": name, "meta": dict(metadata),
            "launch_index": 0, "availability_zone": None}
    with tempfile.TemporaryDirectory(prefix="vimkit-cd-") as work:
        latest = Path(work) / "openstack" / "latest"
        latest.mkdir(parents=True)
        (latest / "meta_data.json").write_text(json.dumps(meta, indent=1))
        (latest / "network_data.json").write_text(json.dumps(network_data(nics), indent=1))
        if user_data is not None:
            (latest / "user_data").write_bytes(user_data)
        tmp = path.with_suffix(".tmp")
        await run(genisoimage, "-quiet", "-o", str(tmp), "-V", LABEL, "-r", "-J", work)
        shutil.move(tmp, path)
    return path

"""The config drive: a small read-only iso9660 disk (label ``config-2``, OpenStack's layout) that
carries a compute's ``userData`` and metadata to its guest.

``openstack/latest/`` holds ``meta_data.json`` (uuid, name, hostname, meta), ``user_data`` (the
compute's userData unchanged) and ``network_data.json`` (links, networks and routes from the
VIM's IPAM, as Nova writes it), so cloud-init's ConfigDrive data source reads it as it is. Built
before every boot (the NICs may have changed) in-process with ``pycdlib``, as ``genisoimage -r -J``
would lay it out (8.3 names plus Rock Ridge and Joliet names): ≈ 2 ms, where spawning
genisoimage took 15–120 ms on a host whose cores were busy with booting guests. The test guest
(scripts/build-test-guest.sh) mounts it and serves its files.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pycdlib

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


#: (ISO 9660 level-1 name, Rock Ridge and Joliet name) of the files under openstack/latest/.
_FILES = (("META_DAT.JSO;1", "meta_data.json"), ("NETWORK_.JSO;1", "network_data.json"),
          ("USER_DAT.;1", "user_data"))


def write_image(path: Path, files: Mapping[str, bytes]) -> None:
    """``files`` (by their names in ``_FILES``) as ``openstack/latest/`` of an iso9660 image at
    ``path``, replaced atomically."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, rock_ridge="1.09", joliet=3, vol_ident=LABEL)
    iso.add_directory("/OPENSTAC", rr_name="openstack", joliet_path="/openstack")
    iso.add_directory("/OPENSTAC/LATEST", rr_name="latest", joliet_path="/openstack/latest")
    for iso_name, name in _FILES:
        if name in files:
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), f"/OPENSTAC/LATEST/{iso_name}", rr_name=name,
                       joliet_path=f"/openstack/latest/{name}")
    tmp = path.with_suffix(".tmp")
    try:
        iso.write(str(tmp))
    finally:
        iso.close()
    os.replace(tmp, path)


async def build(path: Path, compute_id: str, name: str, metadata: Mapping[str, str], user_data: bytes | None,
                nics: Sequence[Mapping[str, Any]]) -> Path:
    """Write the config drive image to ``path`` (atomically) and return it."""
    meta = {"uuid": compute_id, "name": name, "hostname": name, "meta": dict(metadata),
            "launch_index": 0, "availability_zone": None}
    files = {"meta_data.json": json.dumps(meta, indent=1).encode(),
             "network_data.json": json.dumps(network_data(nics), indent=1).encode()}
    if user_data is not None:
        files["user_data"] = user_data
    # In the event loop: ≈ 2 ms of pure Python. A thread cost more than it saved, since every
    # other thread of the VIM (the taps') then waited up to a GIL switch interval at each syscall.
    write_image(path, files)
    return path

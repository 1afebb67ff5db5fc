"""What a create prepares without spawning processes is what the tools it replaced made: the
config drive (genisoimage's layout), qcow2 files (qemu-img's bytes) and taps (ip's settings).
No VM is booted; root and qemu-img are needed (taps live in a namespace made for the test)."""

from __future__ import annotations

import asyncio
import glob
import io
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.qemu.conftest import _skip, _unavailable
from vimkit.drivers.qemu import configdrive
from vimkit.drivers.qemu.disks import create_qcow2
from vimkit.drivers.qemu.host import Namespace, bridge_name, tap_name

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _tools() -> None:
    reason = _unavailable()
    if reason:
        _skip(reason)


def read_iso(path: Path, name: str, joliet: bool = False) -> bytes:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        where = {"joliet_path": f"/openstack/latest/{name}"} if joliet else {"rr_path": f"/openstack/latest/{name}"}
        iso.get_file_from_iso_fp(out, **where)
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"config-2"
        return out.getvalue()
    finally:
        iso.close()


def test_config_drive_layout(tmp_path: Path) -> None:
    user_data = "#cloud-config\n".encode() + "é".encode() * 30_000
    nics = [{"id": "p1", "mac": "52:54:00:00:00:01", "network_id": "n1", "mtu": 1450, "address": "10.0.0.5/24",
             "gateway": "10.0.0.1"}]
    path = asyncio.run(configdrive.build(tmp_path / "config.iso", "c-1", "web", {"role": "db"}, user_data, nics))
    assert read_iso(path, "user_data") == user_data
    assert read_iso(path, "user_data", joliet=True) == user_data
    meta = json.loads(read_iso(path, "meta_data.json"))
    assert (meta["uuid"], meta["hostname"], meta["meta"]) == ("c-1", "web", {"role": "db"})
    network = json.loads(read_iso(path, "network_data.json"))
    assert network["networks"][0]["ip_address"] == "10.0.0.5"
    assert network["networks"][0]["routes"][0]["gateway"] == "10.0.0.1"
    blkid = subprocess.run(["blkid", "-o", "export", str(path)], capture_output=True, text=True).stdout
    assert "LABEL=config-2" in blkid and "TYPE=iso9660" in blkid
    # Without userData there is no user_data file (cloud-init then runs none).
    asyncio.run(configdrive.build(path, "c-1", "web", {}, None, []))
    with pytest.raises(Exception):
        read_iso(path, "user_data")


def test_qcow2_files_are_what_qemu_img_makes(tmp_path: Path) -> None:
    backing = tmp_path / "image.raw"
    backing.write_bytes(b"\x00" * (1 << 20))

    async def scenario() -> None:
        for size in ("1G", "3G"):
            for attempt in range(2):  # the first makes the template, the second writes it
                ours, theirs = tmp_path / f"ours-{size}-{attempt}.qcow2", tmp_path / f"theirs-{size}.qcow2"
                await create_qcow2("qemu-img", ours, size)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(theirs), size], check=True)
                assert ours.read_bytes() == theirs.read_bytes()
            subprocess.run(["qemu-img", "check", "-q", str(ours)], check=True)
        for attempt in range(2):
            ours, theirs = tmp_path / f"overlay-{attempt}.qcow2", tmp_path / "overlay-theirs.qcow2"
            await create_qcow2("qemu-img", ours, None, str(backing), "raw")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "raw", str(theirs)],
                           check=True)
            assert ours.read_bytes() == theirs.read_bytes()
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(ours)], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["backing-filename"] == str(backing) and info["virtual-size"] == 1 << 20

    asyncio.run(scenario())
    assert not list(tmp_path.glob(".*.tmp"))


def test_taps_made_in_the_namespace(tmp_path: Path) -> None:
    namespace = Namespace(f"vimkit-t{uuid.uuid4().hex[:8]}")
    tap = tap_name("port-1")

    def link(where: list[str]) -> dict:
        out = subprocess.run(["ip", *where, "-j", "-d", "link", "show", "dev", tap], capture_output=True, text=True)
        return json.loads(out.stdout)[0] if out.returncode == 0 else {}

    async def scenario() -> int:
        await namespace.ensure()
        await namespace.add_network("net-1", "vxlan", 4711, None, 1450)
        await namespace.add_tap("port-1", "net-1", 1400)
        await namespace.add_tap("port-1", "net-1", 1400)  # again: configured, not an error
        made = link(["-n", namespace.name])
        assert made["master"] == bridge_name("net-1") and made["mtu"] == 1400 and "UP" in made["flags"]
        info = made["linkinfo"]["info_data"]
        assert made["linkinfo"]["info_kind"] == "tun" and info["type"] == "tap"
        assert info["pi"] is False and info["vnet_hdr"] is False and info["persist"] is True
        assert not link([]), "a tap in the root namespace"
        inode = os.stat(namespace.path).st_ino
        with pytest.raises(Exception, match="no-such-bridge|No such device|no interface"):
            await namespace.add_tap("port-2", "no-such-bridge", 1400)
        return inode

    try:
        inode = asyncio.run(scenario())
    finally:
        asyncio.run(namespace.delete())
    # No thread of this process is left in the deleted namespace (it would keep it and its devices).
    assert not [t for t in glob.glob("/proc/self/task/*/ns/net") if os.stat(t).st_ino == inode]
    assert not namespace.exists()

"""What the QEMU backend remembers across VIM restarts, as one JSON document.

The processes, taps and files are the truth; this file records what they belong to (which tap
is which port, which qcow2 is which volume, which pid runs which compute) so that a restarted VIM
finds them again. Written through a temporary file and an atomic rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_FILE = "qemu-state.json"


@dataclass
class VmRecord:
    compute_id: str
    name: str
    host_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    state: str                                   # the RunningState the VIM last saw or asked for
    image_ref: str | None = None
    kernel: str = ""                             # "" with a disk image booted by its own loader
    initrd: str = ""
    user_data: str = ""                          # base64 of the compute's userData (config drive)
    root_backing: str = ""                       # a DISK image the root disk is a qcow2 overlay of
    root_backing_format: str = ""
    root_snapshot: list[str] = field(default_factory=list)    # [qcow2 path, snapshot id] to copy
    pid: int | None = None
    epoch: int = 0                               # bumps with every new QEMU process
    ports: list[str] = field(default_factory=list)
    volumes: list[list[str]] = field(default_factory=list)    # [volume id, guest device]
    metadata: dict[str, str] = field(default_factory=dict)
    boot_seconds: float | None = None            # launch to ready marker, last boot
    prepare_seconds: float | None = None         # taps, config drive, root disk, last boot
    queue_seconds: float | None = None           # waiting for a boot slot, last boot
    boot_ports: list[str] = field(default_factory=list)       # ports on the current process's command line
    #: Wall-clock (epoch seconds) marks of the last create/start, for bench/bench_qemu.py to split
    #: the VIM's overhead: entered, preparing, taps/drive/root (each step's end), prepared,
    #: launched, ready, returned.
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class NetworkRecord:
    network_id: str
    network_type: str
    segmentation_id: int | None
    physical_network: str | None
    mtu: int
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class SubnetRecord:
    subnet_id: str
    network_id: str
    cidr: str
    gateway_ip: str | None = None


@dataclass
class PortRecord:
    port_id: str
    network_id: str
    mac_address: str
    fixed_ips: list[list[str]] = field(default_factory=list)  # [subnet id, address]
    compute_id: str | None = None
    device: str | None = None                                  # guest NIC name (eth0…)
    tap_epoch: int = 0                                         # bumps when the tap (and its counters) go


@dataclass
class VolumeRecord:
    volume_id: str
    pool_id: str
    size_gb: int
    path: str
    attachments: list[list[str]] = field(default_factory=list)  # [compute id, device]


@dataclass
class SnapshotRecord:
    snapshot_id: str
    source_id: str
    kind: str                                   # volume | compute
    size_gb: int
    created_at: float
    path: str


_KINDS = {"vms": VmRecord, "networks": NetworkRecord, "subnets": SubnetRecord, "ports": PortRecord,
          "volumes": VolumeRecord, "snapshots": SnapshotRecord}


@dataclass
class QemuState:
    vms: dict[str, VmRecord] = field(default_factory=dict)
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    subnets: dict[str, SubnetRecord] = field(default_factory=dict)
    ports: dict[str, PortRecord] = field(default_factory=dict)
    volumes: dict[str, VolumeRecord] = field(default_factory=dict)
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {"version": 1, **{kind: {k: asdict(v) for k, v in getattr(self, kind).items()} for kind in _KINDS}}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "QemuState":
        state = cls()
        for kind, record in _KINDS.items():
            names = {f.name for f in fields(record)}
            for key, value in (document.get(kind) or {}).items():
                getattr(state, kind)[key] = record(**{k: v for k, v in value.items() if k in names})
        return state

    def save(self, directory: Path, durable: bool = True) -> None:
        """Atomic for a crash of the VIM either way; ``durable=False`` leaves the fsync (which
        survives a crash of the host) to :func:`sync` later."""
        path = directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            json.dump(self.to_document(), handle, indent=1)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            sync(directory)

    @classmethod
    def load(cls, directory: Path) -> "QemuState":
        path = directory / STATE_FILE
        if not path.exists():
            return cls()
        return cls.from_document(json.loads(path.read_text()))


def sync(directory: Path) -> None:
    """Flush the state file and its directory entry to disk."""
    for target, flags in ((directory / STATE_FILE, os.O_RDONLY), (directory, os.O_RDONLY | os.O_DIRECTORY)):
        try:
            fd = os.open(target, flags)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

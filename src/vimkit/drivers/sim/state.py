"""The simulator's state and its persistence as one JSON document.

Plain dataclasses of JSON types, so that ``asdict`` and ``Cls(**data)`` round-trip them; the
whole state is written after every change through a temporary file, ``fsync`` and an atomic
``os.replace`` — a crash leaves either the old or the new file, never a torn one. The state is
small (a few hundred bytes per object), so rewriting it is cheaper than keeping a journal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

FORMAT_VERSION = 1
STATE_FILE = "sim-state.json"


@dataclass
class SimCompute:
    compute_id: str
    name: str
    host_id: str
    zone_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    state: str
    image_ref: str | None = None
    epoch: int = 0                       # bumps when the guest's devices are recreated
    booted_at: float = 0.0               # clock time of the current epoch's boot
    created_at: float = 0.0
    tick: int = 0                        # samples taken in this epoch
    ar_state: float = 0.0                # CPU noise memory (AR(1))
    last_sample_at: float | None = None
    ports: list[str] = field(default_factory=list)
    volumes: list[list[str]] = field(default_factory=list)       # [volume id, device]
    counters: dict[str, list[int]] = field(default_factory=dict)  # port id → [rx B, tx B, rx pkt, tx pkt]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class SimNetwork:
    network_id: str
    name: str
    segmentation: dict[str, Any]
    shared: bool = False


@dataclass
class SimSubnet:
    subnet_id: str
    network_id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None


@dataclass
class SimPort:
    port_id: str
    network_id: str
    mac_address: str
    fixed_ips: list[list[str]] = field(default_factory=list)      # [subnet id, address]
    compute_id: str | None = None
    device: str | None = None


@dataclass
class SimVolume:
    volume_id: str
    name: str
    pool_id: str
    zone_id: str
    size_gb: int
    multi_attach: bool = False
    used_pct: float = 0.0
    tick: int = 0
    last_sample_at: float | None = None
    attachments: list[list[str]] = field(default_factory=list)  # [compute id, device]


@dataclass
class SimSnapshot:
    snapshot_id: str
    source_id: str
    kind: str                            # "compute" | "volume"
    size_gb: int
    created_at: float


@dataclass
class SimFault:
    fault_id: str
    kind: str
    target_id: str
    params: dict[str, Any]
    created_at: float
    root_event_id: str | None = None


@dataclass
class SimState:
    computes: dict[str, SimCompute] = field(default_factory=dict)
    networks: dict[str, SimNetwork] = field(default_factory=dict)
    subnets: dict[str, SimSubnet] = field(default_factory=dict)
    ports: dict[str, SimPort] = field(default_factory=dict)
    volumes: dict[str, SimVolume] = field(default_factory=dict)
    snapshots: dict[str, SimSnapshot] = field(default_factory=dict)
    faults: dict[str, SimFault] = field(default_factory=dict)

    _TYPES = {
        "computes": SimCompute, "networks": SimNetwork, "subnets": SimSubnet, "ports": SimPort,
        "volumes": SimVolume, "snapshots": SimSnapshot, "faults": SimFault,
    }

    def to_document(self, seed: int) -> dict[str, Any]:
        document: dict[str, Any] = {"version": FORMAT_VERSION, "seed": seed}
        for name in self._TYPES:
            # orjson serialises dataclasses itself, far faster than dataclasses.asdict copies them.
            document[name] = getattr(self, name)
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "SimState":
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported simulator state version {document.get('version')!r}")
        state = cls()
        for name, record_type in cls._TYPES.items():
            known = {f.name for f in fields(record_type)}
            target = getattr(state, name)
            for key, value in document.get(name, {}).items():
                target[key] = record_type(**{k: v for k, v in value.items() if k in known})
        return state


def save_state(directory: Path, document: dict[str, Any], *, durable: bool = False) -> None:
    """Write atomically: a temporary file in the same directory, then rename over the old one.

    The rename makes every save all-or-nothing and survives the process being killed (the data
    is in the kernel's page cache). ``durable`` adds the fsyncs that also survive a power cut;
    the simulator saves after every operation, and those fsyncs cost more than the operation.
    """
    write_state(directory, encode_state(document), durable=durable)


def encode_state(document: dict[str, Any]) -> bytes:
    """The state file's bytes. One call holds the GIL throughout, so it reads a consistent state
    even while other threads run."""
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)


def write_state(directory: Path, data: bytes, *, durable: bool = False) -> None:
    """:func:`save_state`'s file work, for bytes from :func:`encode_state`; any thread."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / STATE_FILE
    temporary = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, final)
    if not durable:
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_state(directory: Path) -> dict[str, Any] | None:
    """The saved document, or None when there is none yet. A corrupt file raises ValueError:
    starting empty would forget running VMs, which is worse than refusing to start."""
    path = directory / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"simulator state {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"simulator state {path} is not a JSON object")
    return document

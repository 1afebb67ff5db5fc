"""The simulator's state and its persistence as one JSON document.

Plain dataclasses of JSON types, so that ``asdict`` and ``Cls(**data)`` round-trip them. The
whole file is rewritten through a temporary file and an atomic ``os.replace`` (and ``fsync`` when
asked) — a crash leaves either the old or the new file, never a torn one. Rewriting is cheaper
than keeping a journal, but encoding every record each time is not: at 15,000 computes it held
the event loop for 10–25 ms a save. :class:`StateEncoder` keeps each record's JSON and encodes
again only the records the operations name as changed; the file is written from those pieces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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


Record = SimCompute | SimNetwork | SimSubnet | SimPort | SimVolume | SimSnapshot | SimFault
#: Each record type's collection in :class:`SimState` and its key attribute.
COLLECTIONS: dict[type, tuple[str, str]] = {
    SimCompute: ("computes", "compute_id"), SimNetwork: ("networks", "network_id"),
    SimSubnet: ("subnets", "subnet_id"), SimPort: ("ports", "port_id"), SimVolume: ("volumes", "volume_id"),
    SimSnapshot: ("snapshots", "snapshot_id"), SimFault: ("faults", "fault_id"),
}
_OPTIONS = orjson.OPT_NON_STR_KEYS


class EncodedState:
    """The state file's content as pieces: a header and, per collection, each record's
    ``"id":{...}``. Immutable once made, so a worker thread can write it while the event loop
    goes on changing the state."""

    __slots__ = ("header", "collections")

    def __init__(self, header: bytes, collections: list[tuple[bytes, list[bytes]]]) -> None:
        self.header = header
        self.collections = collections

    def buffers(self) -> Iterable[bytes]:
        yield self.header
        for name, records in self.collections:
            yield name
            for index, record in enumerate(records):
                if index:
                    yield b","
                yield record
            yield b"}"
        yield b"}"


class StateEncoder:
    """Keeps the JSON of every record between saves and encodes again only what changed.

    The operations name what they changed (:meth:`changed`, :meth:`changed_ids`); one that
    cannot say calls :meth:`everything_changed`, which is always correct, and so does the first
    save after a start. A record named but no longer in the state was deleted.
    """

    def __init__(self) -> None:
        self._records: dict[str, dict[str, bytes]] | None = None
        self._changed: dict[tuple[str, str], None] = {}

    def everything_changed(self) -> None:
        self._records = None
        self._changed.clear()

    def changed(self, records: Iterable[Record]) -> None:
        if self._records is None:
            return
        for record in records:
            collection, key = COLLECTIONS[type(record)]
            self._changed[(collection, getattr(record, key))] = None

    def changed_ids(self, collection: str, ids: Iterable[str]) -> None:
        if self._records is None:
            return
        for object_id in ids:
            self._changed[(collection, object_id)] = None

    def encode(self, state: SimState, seed: int) -> EncodedState:
        records = self._records
        if records is None:
            records = self._records = {
                name: {key: _member(key, value) for key, value in getattr(state, name).items()}
                for name in SimState._TYPES
            }
        else:
            for name, key in self._changed:
                value = getattr(state, name).get(key)
                if value is None:
                    records[name].pop(key, None)
                else:
                    records[name][key] = _member(key, value)
        self._changed.clear()
        header = b'{"version":' + str(FORMAT_VERSION).encode() + b',"seed":' + orjson.dumps(seed)
        return EncodedState(header, [(b',"' + name.encode() + b'":{', list(records[name].values()))
                                     for name in SimState._TYPES])


def _member(key: str, record: Record) -> bytes:
    """``"key":{...}``. Sliced, so kept as a copy of its own size: orjson's result is a larger
    buffer shrunk in place, and keeping thousands of those made encoding them four times slower
    (each needed fresh memory instead of reusing the last one's)."""
    return orjson.dumps({key: record}, option=_OPTIONS)[1:-1]


def save_state(directory: Path, document: dict[str, Any], *, durable: bool = False) -> None:
    """Write ``document`` atomically: a temporary file in the same directory, then rename over
    the old one (see :func:`write_state`)."""
    write_state(directory, encode_state(document), durable=durable)


def encode_state(document: dict[str, Any]) -> bytes:
    """The bytes of a whole document (the simulator itself uses :class:`StateEncoder`)."""
    return orjson.dumps(document, option=_OPTIONS)


_IOV_MAX = 1024


def write_state(directory: Path, data: bytes | EncodedState, *, durable: bool = False) -> None:
    """Write atomically, from any thread: a temporary file in the same directory, then rename
    over the old one. The rename makes every save all-or-nothing and survives the process being
    killed (the data is in the kernel's page cache). ``durable`` adds the fsyncs that also
    survive a power cut; the simulator saves after every operation, and those fsyncs cost more
    than the operation. An :class:`EncodedState` goes out with ``writev``, a thousand pieces per
    call, without the GIL: joining megabytes in Python would hold it."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / STATE_FILE
    temporary = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    with open(temporary, "wb", buffering=0) as handle:
        if isinstance(data, EncodedState):
            _write_pieces(handle.fileno(), list(data.buffers()))
        else:
            _write_pieces(handle.fileno(), [data])
        if durable:
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


def _write_pieces(fd: int, pieces: list[bytes]) -> None:
    for start in range(0, len(pieces), _IOV_MAX):
        chunk = pieces[start:start + _IOV_MAX]
        written = os.writev(fd, chunk)
        expected = sum(len(piece) for piece in chunk)
        if written < expected:  # a short write (a signal, a full disk): the rest the simple way
            rest = b"".join(chunk)[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


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

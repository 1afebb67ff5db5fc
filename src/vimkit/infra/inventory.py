"""The infrastructure inventory: NFVI-PoPs, resource zones, hosts, storage pools, provider networks.

The VIM does not discover its hosts (the simulated and QEMU backends have nothing to discover
from); the operator declares them in a TOML file given to ``load_inventory`` — or the VIM uses
the built-in default, :data:`DEFAULT_INVENTORY_TOML` (two zones of eight hosts in one NFVI-PoP,
one storage pool per zone, a VLAN and a VXLAN provider network). The models use the camelCase
names the admin API shows (``GET /admin/v1/hosts``, ``GET /admin/v1/zones``), so one model serves
the file, the API and the OpenAPI document.

File format (every table is optional except that hosts, pools and networks must name zones that
exist; unknown keys are refused so that a typo never passes silently)::

    # The whole document may also be nested under an [inventory] table, so that the inventory can
    # share a file with the [vimkit] server settings.

    [[nfviPops]]                      # optional; when present every zone must name one of these
    nfviPopId = "pop-1"
    geographicalLocationInfo = "Sophia Antipolis"

    [[zones]]
    zoneId = "zone-a"                 # 1-64 chars of A-Z a-z 0-9 . _ : -
    zoneName = "Zone A"
    nfviPopId = "pop-1"
    zoneState = "ENABLED"             # ENABLED | DISABLED (a disabled zone takes no new resources)
    zoneProperty = ["ssd"]            # free-form labels
    metadata = { rack = "r1" }

    [[hosts]]
    hostId = "zone-a-host-01"
    zoneId = "zone-a"
    vcpus = 32                        # physical CPU threads
    memoryMb = 131072
    diskGb = 1000                     # local (ephemeral/root) disk
    reservedVcpus = 0                 # kept for the host itself, never allocated
    reservedMemoryMb = 4096
    reservedDiskGb = 0
    cpuAllocationRatio = 4.0          # > 0; allocatable = floor((total - reserved) * ratio)
    ramAllocationRatio = 1.0
    diskAllocationRatio = 1.0
    cpuArchitecture = "x86_64"
    traits = ["HW_NIC_SRIOV", "HW_NUMA_ROOT", "HW_CPU_PINNING"]
    adminState = "ENABLED"            # ENABLED | DISABLED | MAINTENANCE

    [[hostGroups]]                    # a series of identical hosts; every [[hosts]] key but hostId
    namePattern = "zone-b-host-{index:02d}"
    count = 8
    startIndex = 1                    # default 1
    zoneId = "zone-b"
    vcpus = 32
    memoryMb = 131072
    diskGb = 1000

    [[storagePools]]
    poolId = "pool-a"
    zoneId = "zone-a"
    typeOfStorage = "volume"
    capacityGb = 20480
    allocationRatio = 1.0             # > 0: thin provisioning above 1
    rdmaEnabled = false
    multiAttach = true                # volumes of this pool may be attached to several computes

    [[providerNetworks]]
    providerNetworkId = "physnet1-vlan"
    networkType = "vlan"              # vlan | vxlan | flat
    physicalNetwork = "physnet1"      # required for vlan and flat, absent for vxlan
    segmentationRanges = [[100, 999]] # VLAN ids within 1-4094, VNIs within 1-16777215; none for flat
    mtu = 1500                        # 68-9216
    zoneIds = []                      # zones it reaches; empty = every zone

Validation: duplicate ids of each kind, references to unknown zones or PoPs, ratios that are not
positive, reservations not smaller than the total, segmentation ranges outside the range of their
type, reversed or overlapping ranges (VLAN ranges overlap only on the same physical network, VNIs
are global) and two flat networks on one physical network are refused. A bad file raises
``ValueError`` whose message starts with the offending key, e.g.
``hosts[3].cpuAllocationRatio: Input should be greater than 0``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]
TraitName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Z][A-Z0-9_]*$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Architecture = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
SegmentationRange = Annotated[list[int], Field(min_length=2, max_length=2)]

VLAN_ID_RANGE = (1, 4094)
VXLAN_VNI_RANGE = (1, 16_777_215)


class Trait:
    """Well-known host traits (os-traits style names). Any upper-case ``A-Z0-9_`` name is accepted;
    these are the ones flavours and the simulated driver know about."""

    SRIOV = "HW_NIC_SRIOV"
    NUMA = "HW_NUMA_ROOT"
    CPU_PINNING = "HW_CPU_PINNING"
    RDMA = "HW_NIC_RDMA"


class AdminState(str, Enum):
    """Operator state of a host. Only ENABLED hosts take new resources; existing ones stay."""

    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    MAINTENANCE = "MAINTENANCE"


class ZoneState(str, Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class NetworkType(str, Enum):
    VLAN = "vlan"
    VXLAN = "vxlan"
    FLAT = "flat"


class _Model(BaseModel):
    # strict: in a config file "32" is a typo for 32, not something to coerce silently (enums
    # relax it per field, since their values are strings in TOML and JSON alike).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NfviPop(_Model):
    nfviPopId: Identifier
    geographicalLocationInfo: Label | None = None


class ResourceZone(_Model):
    """IFA 005 ResourceZone (8.10.2): a set of hosts with a common failure domain in an NFVI-PoP."""

    zoneId: Identifier
    zoneName: Label
    nfviPopId: Identifier
    zoneState: ZoneState = Field(ZoneState.ENABLED, strict=False)
    zoneProperty: list[Label] = Field(default_factory=list, max_length=64)
    metadata: dict[Label, Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=128
    )


class _HostFields(_Model):
    """The members shared by a host and a host group template."""

    zoneId: Identifier
    vcpus: int = Field(ge=1, le=65_536, description="Physical CPU threads.")
    memoryMb: int = Field(ge=1, le=1 << 34, description="Physical memory in MB (2^20 bytes).")
    diskGb: int = Field(ge=0, le=1 << 30, description="Local disk in GB (2^30 bytes).")
    reservedVcpus: int = Field(0, ge=0, description="Kept for the host itself, never allocated.")
    reservedMemoryMb: int = Field(0, ge=0)
    reservedDiskGb: int = Field(0, ge=0)
    cpuAllocationRatio: float = Field(4.0, gt=0, le=1000, description="vCPU overcommit ratio.")
    ramAllocationRatio: float = Field(1.0, gt=0, le=1000)
    diskAllocationRatio: float = Field(1.0, gt=0, le=1000)
    cpuArchitecture: Architecture = "x86_64"
    traits: list[TraitName] = Field(default_factory=list, max_length=256)
    adminState: AdminState = Field(AdminState.ENABLED, strict=False)
    metadata: dict[Label, Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=128
    )

    @model_validator(mode="after")
    def _check_host(self) -> "_HostFields":
        if self.reservedVcpus >= self.vcpus:
            raise ValueError("reservedVcpus: must be smaller than vcpus")
        if self.reservedMemoryMb >= self.memoryMb:
            raise ValueError("reservedMemoryMb: must be smaller than memoryMb")
        if self.diskGb and self.reservedDiskGb >= self.diskGb:
            raise ValueError("reservedDiskGb: must be smaller than diskGb")
        if not self.diskGb and self.reservedDiskGb:
            raise ValueError("reservedDiskGb: must be 0 when diskGb is 0")
        if len(set(self.traits)) != len(self.traits):
            raise ValueError("traits: duplicate trait")
        return self


class Host(_HostFields):
    """A compute host (hypervisor) and what it offers to placement."""

    hostId: Identifier


class HostGroup(_HostFields):
    """File-only shorthand: ``count`` identical hosts named by ``namePattern.format(index=i)``."""

    namePattern: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    count: int = Field(ge=1, le=1_000_000)
    startIndex: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check_pattern(self) -> "HostGroup":
        try:
            first = self.namePattern.format(index=self.startIndex)
            second = self.namePattern.format(index=self.startIndex + 1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"namePattern: must contain {{index}} and nothing else to fill ({exc})") from exc
        if first == second:
            raise ValueError("namePattern: must contain {index}")
        return self

    def expand(self) -> list[dict[str, Any]]:
        template = self.model_dump(exclude={"namePattern", "count", "startIndex"})
        return [
            {**template, "hostId": self.namePattern.format(index=index)}
            for index in range(self.startIndex, self.startIndex + self.count)
        ]


class StoragePool(_Model):
    """A block-storage pool serving one zone (a Ceph pool, an LVM volume group, a directory of qcow2)."""

    poolId: Identifier
    zoneId: Identifier
    typeOfStorage: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "volume"
    capacityGb: int = Field(ge=1, le=1 << 40)
    allocationRatio: float = Field(1.0, gt=0, le=1000, description="Thin-provisioning ratio.")
    rdmaEnabled: bool = False
    multiAttach: bool = False


class ProviderNetwork(_Model):
    """Where tenant networks are realised: a physical network (VLAN/flat) or the VXLAN overlay."""

    providerNetworkId: Identifier
    networkType: NetworkType = Field(strict=False)
    physicalNetwork: Identifier | None = None
    segmentationRanges: list[SegmentationRange] = Field(default_factory=list, max_length=1024)
    mtu: int = Field(1500, ge=68, le=9216)
    zoneIds: list[Identifier] = Field(default_factory=list, description="Empty = every zone.")

    @model_validator(mode="after")
    def _check_segments(self) -> "ProviderNetwork":
        if self.networkType is NetworkType.FLAT:
            if self.segmentationRanges:
                raise ValueError("segmentationRanges: a flat network has no segmentation ids")
            if not self.physicalNetwork:
                raise ValueError("physicalNetwork: required for a flat network")
            return self
        if self.networkType is NetworkType.VLAN and not self.physicalNetwork:
            raise ValueError("physicalNetwork: required for a vlan network")
        if self.networkType is NetworkType.VXLAN and self.physicalNetwork:
            raise ValueError("physicalNetwork: a vxlan network has none (it runs on the overlay)")
        if not self.segmentationRanges:
            raise ValueError(f"segmentationRanges: a {self.networkType.value} network needs at least one")
        low, high = VLAN_ID_RANGE if self.networkType is NetworkType.VLAN else VXLAN_VNI_RANGE
        for index, (first, last) in enumerate(self.segmentationRanges):
            if first > last:
                raise ValueError(f"segmentationRanges[{index}]: [{first}, {last}] is reversed")
            if first < low or last > high:
                raise ValueError(
                    f"segmentationRanges[{index}]: [{first}, {last}] is outside "
                    f"{low}-{high} for {self.networkType.value}"
                )
        overlap = _first_overlap([(r[0], r[1], index) for index, r in enumerate(self.segmentationRanges)])
        if overlap is not None:
            raise ValueError(f"segmentationRanges[{overlap[1]}]: overlaps segmentationRanges[{overlap[0]}]")
        return self

    def segment_count(self) -> int:
        return sum(last - first + 1 for first, last in self.segmentationRanges)


def _first_overlap(ranges: Iterable[tuple[int, int, Any]]) -> tuple[Any, Any] | None:
    """Return the tags of two overlapping closed ranges, or None."""
    ordered = sorted(ranges)
    for (_first_a, last_a, tag_a), (first_b, _last_b, tag_b) in zip(ordered, ordered[1:]):
        if first_b <= last_a:
            return tag_a, tag_b
    return None


class Inventory(_Model):
    """The whole declared infrastructure, validated as one (ids unique, references resolved)."""

    nfviPops: list[NfviPop] = Field(default_factory=list)
    zones: list[ResourceZone] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)
    storagePools: list[StoragePool] = Field(default_factory=list)
    providerNetworks: list[ProviderNetwork] = Field(default_factory=list)

    _zones_by_id: dict[str, ResourceZone] = PrivateAttr(default_factory=dict)
    _hosts_by_id: dict[str, Host] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> "Inventory":
        origins: Mapping[int, str] = (info.context or {}).get("host_origins", {}) if info else {}

        def host_key(index: int) -> str:
            return origins.get(index, f"hosts[{index}]")

        _unique("nfviPops", "nfviPopId", [p.nfviPopId for p in self.nfviPops])
        _unique("zones", "zoneId", [z.zoneId for z in self.zones])
        _unique("storagePools", "poolId", [p.poolId for p in self.storagePools])
        _unique("providerNetworks", "providerNetworkId", [n.providerNetworkId for n in self.providerNetworks])
        seen: dict[str, int] = {}
        for index, host in enumerate(self.hosts):
            if host.hostId in seen:
                raise ValueError(
                    f"{host_key(index)}.hostId: duplicate id {host.hostId!r} "
                    f"(first at {host_key(seen[host.hostId])})"
                )
            seen[host.hostId] = index
        pops = {p.nfviPopId for p in self.nfviPops}
        if pops:
            for index, zone in enumerate(self.zones):
                if zone.nfviPopId not in pops:
                    raise ValueError(f"zones[{index}].nfviPopId: unknown NFVI-PoP {zone.nfviPopId!r}")
        zones = {z.zoneId for z in self.zones}
        for index, host in enumerate(self.hosts):
            if host.zoneId not in zones:
                raise ValueError(f"{host_key(index)}.zoneId: unknown zone {host.zoneId!r}")
        for index, pool in enumerate(self.storagePools):
            if pool.zoneId not in zones:
                raise ValueError(f"storagePools[{index}].zoneId: unknown zone {pool.zoneId!r}")
        for index, net in enumerate(self.providerNetworks):
            for zone_id in net.zoneIds:
                if zone_id not in zones:
                    raise ValueError(f"providerNetworks[{index}].zoneIds: unknown zone {zone_id!r}")
        self._check_segment_overlaps()
        return self

    def _check_segment_overlaps(self) -> None:
        """VLAN ids are per physical network, VNIs are global, a physical network has one flat net."""
        vlan: dict[str, list[tuple[int, int, tuple[int, int]]]] = {}
        vxlan: list[tuple[int, int, tuple[int, int]]] = []
        flat: dict[str, int] = {}
        for index, net in enumerate(self.providerNetworks):
            if net.networkType is NetworkType.FLAT:
                assert net.physicalNetwork is not None
                if net.physicalNetwork in flat:
                    raise ValueError(
                        f"providerNetworks[{index}].physicalNetwork: {net.physicalNetwork!r} already "
                        f"carries the flat network providerNetworks[{flat[net.physicalNetwork]}]"
                    )
                flat[net.physicalNetwork] = index
                continue
            bucket = vxlan if net.networkType is NetworkType.VXLAN else vlan.setdefault(
                net.physicalNetwork or "", []
            )
            bucket.extend((first, last, (index, r)) for r, (first, last) in enumerate(net.segmentationRanges))
        for ranges in [*vlan.values(), vxlan]:
            overlap = _first_overlap(ranges)
            if overlap is not None:
                (net_a, range_a), (net_b, range_b) = overlap
                raise ValueError(
                    f"providerNetworks[{net_b}].segmentationRanges[{range_b}]: overlaps "
                    f"providerNetworks[{net_a}].segmentationRanges[{range_a}]"
                )

    def model_post_init(self, context: Any, /) -> None:
        self._zones_by_id = {zone.zoneId: zone for zone in self.zones}
        self._hosts_by_id = {host.hostId: host for host in self.hosts}

    def zone(self, zone_id: str) -> ResourceZone:
        """The zone with this id; ``KeyError`` when unknown."""
        return self._zones_by_id[zone_id]

    def host(self, host_id: str) -> Host:
        """The host with this id; ``KeyError`` when unknown."""
        return self._hosts_by_id[host_id]

    def hosts_in(self, zone_id: str) -> list[Host]:
        return [host for host in self.hosts if host.zoneId == zone_id]

    def pools_in(self, zone_id: str) -> list[StoragePool]:
        return [pool for pool in self.storagePools if pool.zoneId == zone_id]

    def pop_of(self, zone_id: str) -> str:
        return self._zones_by_id[zone_id].nfviPopId


def _unique(collection: str, key: str, values: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(
                f"{collection}[{index}].{key}: duplicate id {value!r} (first at {collection}[{seen[value]}])"
            )
        seen[value] = index


_SUBKEY = re.compile(r"^[A-Za-z]\w*(\[\d+\])*(\.[A-Za-z]\w*(\[\d+\])*)*: ")
_TOP_LEVEL = ("nfviPops", "zones", "hosts", "hostGroups", "storagePools", "providerNetworks")


def _format_error(error: ValidationError, origins: Mapping[int, str]) -> str:
    """One line naming the offending key, e.g. ``hosts[3].cpuAllocationRatio: Input should be …``.

    Field errors carry their location; errors raised by a model validator start with the member
    they are about (``reservedVcpus: …``) and are appended to the location of that model.
    """
    first = error.errors()[0]
    loc = list(first["loc"])
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "hosts" and isinstance(loc[1], int) and loc[1] in origins:
        parts.append(origins[loc[1]])
        loc = loc[2:]
    for part in loc:
        if isinstance(part, int) and parts:
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(str(part))
    path = ".".join(parts)
    message = str(first["msg"]).removeprefix("Value error, ")
    if path and not (not loc and message.startswith(_TOP_LEVEL)):
        message = f"{path}.{message}" if _SUBKEY.match(message) else f"{path}: {message}"
    more = len(error.errors()) - 1
    return message + (f" ({more} more error{'s' if more > 1 else ''})" if more else "")


def parse_inventory(document: Mapping[str, Any], *, source: str = "inventory") -> Inventory:
    """Validate a parsed TOML/JSON document (the file format above) into an :class:`Inventory`.

    Raises ``ValueError`` whose message names the offending key, prefixed by ``source``.
    """
    data = dict(document)
    if set(data) >= {"inventory"}:
        nested = data.pop("inventory")
        data.pop("vimkit", None)
        if data:
            raise ValueError(f"{source}: {sorted(data)[0]}: unknown key next to [inventory]")
        if not isinstance(nested, Mapping):
            raise ValueError(f"{source}: inventory: must be a table")
        data = dict(nested)
    groups_raw = data.pop("hostGroups", [])
    if not isinstance(groups_raw, list):
        raise ValueError(f"{source}: hostGroups: must be an array of tables")
    hosts = data.get("hosts", [])
    if not isinstance(hosts, list):
        raise ValueError(f"{source}: hosts: must be an array of tables")
    expanded = list(hosts)
    origins: dict[int, str] = {}
    for group_index, raw in enumerate(groups_raw):
        try:
            group = HostGroup.model_validate(raw)
        except ValidationError as exc:
            message = _format_error(exc, {})
            joiner = "." if _SUBKEY.match(message) else ": "
            raise ValueError(f"{source}: hostGroups[{group_index}]{joiner}{message}") from None
        for host in group.expand():
            origins[len(expanded)] = f"hostGroups[{group_index}] (host {host['hostId']!r})"
            expanded.append(host)
    data["hosts"] = expanded
    try:
        return Inventory.model_validate(data, context={"host_origins": origins})
    except ValidationError as exc:
        raise ValueError(f"{source}: {_format_error(exc, origins)}") from None


def load_inventory(path: Path | None) -> Inventory:
    """Read the inventory TOML file at ``path``; ``None`` gives the built-in default inventory."""
    if path is None:
        return default_inventory()
    try:
        with Path(path).open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"inventory file {path}: does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"inventory file {path}: not valid TOML: {exc}") from None
    return parse_inventory(document, source=f"inventory file {path}")


DEFAULT_INVENTORY_TOML = """\
# vimkit's built-in inventory: one NFVI-PoP, two zones of eight hosts, a pool per zone,
# a VLAN range on physnet1 and a VXLAN range on the overlay.

[[nfviPops]]
nfviPopId = "pop-1"
geographicalLocationInfo = "simulated"

[[zones]]
zoneId = "zone-a"
zoneName = "Zone A"
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-b"
zoneName = "Zone B"
nfviPopId = "pop-1"

# Two hosts per zone carry SR-IOV NICs and CPU pinning for data-plane workloads.
[[hostGroups]]
namePattern = "zone-a-host-{index:02d}"
count = 2
zoneId = "zone-a"
vcpus = 32
memoryMb = 131072
diskGb = 1000
reservedMemoryMb = 4096
traits = ["HW_NIC_SRIOV", "HW_NUMA_ROOT", "HW_CPU_PINNING"]

[[hostGroups]]
namePattern = "zone-a-host-{index:02d}"
startIndex = 3
count = 6
zoneId = "zone-a"
vcpus = 32
memoryMb = 131072
diskGb = 1000
reservedMemoryMb = 4096
traits = ["HW_NUMA_ROOT"]

[[hostGroups]]
namePattern = "zone-b-host-{index:02d}"
count = 2
zoneId = "zone-b"
vcpus = 32
memoryMb = 131072
diskGb = 1000
reservedMemoryMb = 4096
traits = ["HW_NIC_SRIOV", "HW_NUMA_ROOT", "HW_CPU_PINNING"]

[[hostGroups]]
namePattern = "zone-b-host-{index:02d}"
startIndex = 3
count = 6
zoneId = "zone-b"
vcpus = 32
memoryMb = 131072
diskGb = 1000
reservedMemoryMb = 4096
traits = ["HW_NUMA_ROOT"]

[[storagePools]]
poolId = "pool-a"
zoneId = "zone-a"
typeOfStorage = "volume"
capacityGb = 20480
multiAttach = true

[[storagePools]]
poolId = "pool-b"
zoneId = "zone-b"
typeOfStorage = "volume"
capacityGb = 20480
rdmaEnabled = true
multiAttach = true

[[providerNetworks]]
providerNetworkId = "physnet1-vlan"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 999]]
mtu = 1500

[[providerNetworks]]
providerNetworkId = "overlay-vxlan"
networkType = "vxlan"
segmentationRanges = [[10000, 19999]]
mtu = 1450
"""


@cache
def default_inventory() -> Inventory:
    """The built-in inventory (parsed once; the model is immutable, so sharing it is safe)."""
    return parse_inventory(tomllib.loads(DEFAULT_INVENTORY_TOML), source="built-in inventory")

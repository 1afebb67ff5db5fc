"""Value types of the placement engine: requests, rules, claims, views and errors.

Plain frozen dataclasses rather than pydantic models: a decision must cost well under a
millisecond, and these objects are built on every allocation. The API layer translates its
pydantic bodies (``affinityOrAntiAffinityConstraints``, ``locationConstraints`` …) into them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class AffinityType(str, Enum):
    AFFINITY = "AFFINITY"
    ANTI_AFFINITY = "ANTI_AFFINITY"


class AffinityScope(str, Enum):
    """Level of (non-)co-location: the host, its resource zone, or the zone's NFVI-PoP."""

    NFVI_NODE = "NFVI_NODE"
    ZONE = "ZONE"
    NFVI_POP = "NFVI_POP"


class Enforcement(str, Enum):
    """HARD rules filter hosts out; SOFT rules only lower (or raise) a host's weight."""

    HARD = "HARD"
    SOFT = "SOFT"


class Strategy(str, Enum):
    """SPREAD puts a resource on the host with the most free capacity, PACK on the least that fits."""

    SPREAD = "SPREAD"
    PACK = "PACK"


def _frozen(values: Iterable[str] | None) -> frozenset[str]:
    if values is None:
        return frozenset()
    if isinstance(values, str):
        raise TypeError("expected a collection of ids, not a string")
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class AffinityRule:
    """One IFA AffinityOrAntiAffinityConstraint as the engine sees it.

    ``members`` is the explicit resource list (``affinityOrAntiAffinityResourceList``);
    ``group_id`` names a producer-managed group (``affinityOrAntiAffinityResourceGroupId``). The
    engine keeps the membership of groups itself — a claimed resource joins the groups its rules
    name — because only the engine sees concurrent allocations in the order they are decided: a
    caller's snapshot of the group from the database would miss a member being placed right now.
    Members that are not placed (yet) are ignored, as Nova does for server groups. A group has
    one policy: every request naming it should carry the same type, scope and enforcement (the
    VIM's affinity groups do), since a SOFT member may legitimately land next to a HARD one.
    """

    type: AffinityType
    scope: AffinityScope = AffinityScope.NFVI_NODE
    enforcement: Enforcement = Enforcement.HARD
    members: frozenset[str] = frozenset()
    group_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", AffinityType(self.type))
        object.__setattr__(self, "scope", AffinityScope(self.scope))
        object.__setattr__(self, "enforcement", Enforcement(self.enforcement))
        object.__setattr__(self, "members", _frozen(self.members))

    @property
    def hard(self) -> bool:
        return self.enforcement is Enforcement.HARD

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "scope": self.scope.value,
            "enforcement": self.enforcement.value,
            "members": sorted(self.members),
            "groupId": self.group_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AffinityRule":
        return cls(
            type=AffinityType(data["type"]),
            scope=AffinityScope(data.get("scope", "NFVI_NODE")),
            enforcement=Enforcement(data.get("enforcement", "HARD")),
            members=frozenset(data.get("members", ())),
            group_id=data.get("groupId"),
        )


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What a compute needs from a host. Amounts are what the flavour asks for (before ratios).

    ``zone_ids`` None means any zone; ``host_id`` pins a host (still filtered, so a pinned host
    that is disabled or full is refused rather than overcommitted).
    """

    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    zone_ids: frozenset[str] | None = None
    host_id: str | None = None
    cpu_architecture: str | None = None
    required_traits: frozenset[str] = frozenset()
    affinity_rules: tuple[AffinityRule, ...] = ()
    resource_group_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("vcpus", "memory_mb", "disk_gb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        if self.zone_ids is not None:
            object.__setattr__(self, "zone_ids", _frozen(self.zone_ids))
        object.__setattr__(self, "required_traits", _frozen(self.required_traits))
        object.__setattr__(self, "affinity_rules", tuple(self.affinity_rules))

    def with_amounts(self, vcpus: int, memory_mb: int, disk_gb: int) -> "PlacementRequest":
        return PlacementRequest(
            vcpus, memory_mb, disk_gb, self.zone_ids, self.host_id, self.cpu_architecture,
            self.required_traits, self.affinity_rules, self.resource_group_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vcpus": self.vcpus,
            "memoryMb": self.memory_mb,
            "diskGb": self.disk_gb,
            "zoneIds": None if self.zone_ids is None else sorted(self.zone_ids),
            "hostId": self.host_id,
            "cpuArchitecture": self.cpu_architecture,
            "requiredTraits": sorted(self.required_traits),
            "affinityRules": [rule.to_dict() for rule in self.affinity_rules],
            "resourceGroupId": self.resource_group_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlacementRequest":
        zone_ids = data.get("zoneIds")
        return cls(
            vcpus=int(data["vcpus"]),
            memory_mb=int(data["memoryMb"]),
            disk_gb=int(data.get("diskGb", 0)),
            zone_ids=None if zone_ids is None else frozenset(zone_ids),
            host_id=data.get("hostId"),
            cpu_architecture=data.get("cpuArchitecture"),
            required_traits=frozenset(data.get("requiredTraits", ())),
            affinity_rules=tuple(AffinityRule.from_dict(r) for r in data.get("affinityRules", ())),
            resource_group_id=data.get("resourceGroupId"),
        )


@dataclass(frozen=True, slots=True)
class MoveTarget:
    """Where a migration may go (IFA ``migrationConstraint``); None members keep the original."""

    zone_ids: frozenset[str] | None = None
    host_id: str | None = None
    affinity_rules: tuple[AffinityRule, ...] | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """A decision: where the resource would go. ``weight`` is the winning host's final weight."""

    host_id: str
    zone_id: str
    nfvi_pop_id: str
    weight: float


@dataclass(frozen=True, slots=True)
class HostHold:
    """Capacity a migrating resource still holds on its source host until the move is confirmed."""

    host_id: str
    zone_id: str
    nfvi_pop_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    request: PlacementRequest

    def to_dict(self) -> dict[str, Any]:
        return {
            "hostId": self.host_id, "zoneId": self.zone_id, "nfviPopId": self.nfvi_pop_id,
            "vcpus": self.vcpus, "memoryMb": self.memory_mb, "diskGb": self.disk_gb,
            "request": self.request.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HostHold":
        return cls(
            data["hostId"], data["zoneId"], data["nfviPopId"], int(data["vcpus"]),
            int(data["memoryMb"]), int(data["diskGb"]), PlacementRequest.from_dict(data["request"]),
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """Capacity recorded for one resource on one host — what the VIM persists and reloads.

    ``groups`` are the affinity groups the resource joined; ``source`` is set while a move is
    in progress (both hosts hold capacity until :meth:`PlacementState.confirm_move`).
    """

    resource_id: str
    host_id: str
    zone_id: str
    nfvi_pop_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    request: PlacementRequest
    groups: frozenset[str] = frozenset()
    source: HostHold | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (camelCase, like the rest of the VIM's persisted documents)."""
        return {
            "resourceId": self.resource_id,
            "hostId": self.host_id,
            "zoneId": self.zone_id,
            "nfviPopId": self.nfvi_pop_id,
            "vcpus": self.vcpus,
            "memoryMb": self.memory_mb,
            "diskGb": self.disk_gb,
            "request": self.request.to_dict(),
            "groups": sorted(self.groups),
            "source": None if self.source is None else self.source.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Claim":
        source = data.get("source")
        return cls(
            resource_id=data["resourceId"],
            host_id=data["hostId"],
            zone_id=data["zoneId"],
            nfvi_pop_id=data["nfviPopId"],
            vcpus=int(data["vcpus"]),
            memory_mb=int(data["memoryMb"]),
            disk_gb=int(data["diskGb"]),
            request=PlacementRequest.from_dict(data["request"]),
            groups=frozenset(data.get("groups", ())),
            source=None if source is None else HostHold.from_dict(source),
        )


@dataclass(frozen=True, slots=True)
class Location:
    """Where a placed resource is: what affinity rules of other resources compare against."""

    host_id: str
    zone_id: str
    nfvi_pop_id: str


@dataclass(frozen=True, slots=True)
class ResourceCapacity:
    """One resource class (vCPU, memory MB or disk GB) summed over hosts.

    ``total`` is allocatable capacity after reservations and allocation ratios;
    ``available`` is the free part on hosts that take new resources (ENABLED, up, zone enabled)
    and ``unavailable`` the free part on the others; ``largest_available`` is the most one host
    can still take. Without overcommitted hosts: total = allocated + available + unavailable.
    """

    total: int
    allocated: int
    available: int
    unavailable: int
    largest_available: int


@dataclass(frozen=True, slots=True)
class CapacityView:
    zone_id: str | None
    hosts: int
    schedulable_hosts: int
    vcpus: ResourceCapacity
    memory_mb: ResourceCapacity
    disk_gb: ResourceCapacity


@dataclass(frozen=True, slots=True)
class HostUsage:
    """One host as the admin API shows it: capacity (after ratios), use and state."""

    host_id: str
    zone_id: str
    nfvi_pop_id: str
    admin_state: str
    up: bool
    schedulable: bool
    vcpus_total: int
    memory_mb_total: int
    disk_gb_total: int
    vcpus_used: int
    memory_mb_used: int
    disk_gb_used: int
    resources: int

    @property
    def vcpus_free(self) -> int:
        return max(0, self.vcpus_total - self.vcpus_used)

    @property
    def memory_mb_free(self) -> int:
        return max(0, self.memory_mb_total - self.memory_mb_used)

    @property
    def disk_gb_free(self) -> int:
        return max(0, self.disk_gb_total - self.disk_gb_used)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What :meth:`PlacementState.load` did: claims whose host is gone are not loaded."""

    loaded: int
    unknown_host: tuple[str, ...] = ()
    overcommitted_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Weighing. Weights scale each resource's share of the free-capacity score (Nova's
    ``*_weight_multiplier``); ``soft_affinity_weight`` is what one member on the wrong side of a
    SOFT rule costs, in units of the whole resource score (which lies in [0, 1]) — the default
    10 makes SOFT rules win over balance, as "best effort" users expect."""

    strategy: Strategy = Strategy.SPREAD
    cpu_weight: float = 1.0
    ram_weight: float = 1.0
    disk_weight: float = 1.0
    soft_affinity_weight: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        weights = (self.cpu_weight, self.ram_weight, self.disk_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("resource weights must be >= 0 and not all 0")
        if self.soft_affinity_weight < 0:
            raise ValueError("soft_affinity_weight must be >= 0")


class PlacementError(Exception):
    """Base of the engine's errors; ``reason`` is a human sentence for ProblemDetails.detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Funnel:
    """How many hosts each filter eliminated, in the order the filters apply."""

    total: int = 0
    eliminated: dict[str, int] = field(default_factory=dict)
    largest_free: tuple[int, int, int] = (0, 0, 0)
    reason: str = ""


class NoValidHost(PlacementError):
    """No host can take the request (cause NO_CAPACITY); ``eliminated`` counts per filter."""

    def __init__(self, reason: str, funnel: Funnel | None = None) -> None:
        super().__init__(reason)
        self.funnel = funnel or Funnel()

    @property
    def eliminated(self) -> dict[str, int]:
        return self.funnel.eliminated


class AffinityUnsatisfiable(PlacementError):
    """Hosts could take the request but none respects its HARD affinity rules
    (cause AFFINITY_UNSATISFIABLE), or the rules contradict the members' locations."""

    def __init__(self, reason: str, funnel: Funnel | None = None) -> None:
        super().__init__(reason)
        self.funnel = funnel or Funnel()


class ClaimNotFound(PlacementError):
    """No claim is recorded for this resource id."""


class ClaimConflict(PlacementError):
    """The resource already has a claim, or a move of it is already in progress."""


class UnknownHost(PlacementError):
    """The host id is not in the inventory."""


class UnknownZone(PlacementError):
    """The zone id is not in the inventory."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host as the engine needs it, independent of how the inventory was declared."""

    host_id: str
    zone_id: str
    nfvi_pop_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    reserved_vcpus: int = 0
    reserved_memory_mb: int = 0
    reserved_disk_gb: int = 0
    cpu_allocation_ratio: float = 1.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    cpu_architecture: str = "x86_64"
    traits: frozenset[str] = frozenset()
    admin_state: str = "ENABLED"
    zone_enabled: bool = True

    def capacity(self) -> tuple[int, int, int]:
        """Allocatable (vCPU, memory MB, disk GB): floor((total - reserved) * ratio), as Placement
        computes it; the epsilon keeps 100 * 1.15 from flooring to 114."""
        return (
            _allocatable(self.vcpus, self.reserved_vcpus, self.cpu_allocation_ratio),
            _allocatable(self.memory_mb, self.reserved_memory_mb, self.ram_allocation_ratio),
            _allocatable(self.disk_gb, self.reserved_disk_gb, self.disk_allocation_ratio),
        )


def _allocatable(total: int, reserved: int, ratio: float) -> int:
    return max(0, math.floor((total - reserved) * ratio + 1e-9))

"""Storage placement: which pool a volume goes to, with its gigabytes claimed atomically.

The compute engine's rules, applied to pools: filters (zone, pinned pool, ``typeOfStorage``,
RDMA, multi-attach, pool state, HARD affinity), a weigher (SPREAD: most free GB first, as
Cinder's CapacityWeigher with a positive multiplier; PACK: least free that fits) and SOFT rules as
a weight. Capacity is ``floor(capacityGb * allocationRatio)`` (thin provisioning above 1).

A VIM has a few pools per zone, not thousands, so a decision is a scan over the pools — simpler
than an index and still microseconds.

Affinity scopes for a volume: ZONE and NFVI_POP compare zones and PoPs. NFVI_NODE compares pools
between volumes ("on the same storage backend" / "not on the same one"); against a *compute*
member — resolved through ``locator``, e.g. :meth:`PlacementState.locate` — NFVI_NODE affinity
means a pool in the compute's zone (pools are shared within a zone, the closest a volume gets to
a host), and NFVI_NODE anti-affinity is always met (a pool volume never lives on a compute host).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vimkit.placement.model import (
    AffinityRule,
    AffinityScope,
    AffinityType,
    AffinityUnsatisfiable,
    ClaimConflict,
    ClaimNotFound,
    Funnel,
    LoadReport,
    Location,
    NoValidHost,
    Strategy,
    UnknownZone,
    _frozen,
)

if TYPE_CHECKING:
    from vimkit.infra.inventory import Inventory

Locator = Callable[[str], Location | None]


@dataclass(frozen=True, slots=True)
class PoolSpec:
    pool_id: str
    zone_id: str
    nfvi_pop_id: str
    type_of_storage: str
    capacity_gb: int
    allocation_ratio: float = 1.0
    rdma_enabled: bool = False
    multi_attach: bool = False
    zone_enabled: bool = True

    def allocatable(self) -> int:
        return max(0, math.floor(self.capacity_gb * self.allocation_ratio + 1e-9))


@dataclass(frozen=True, slots=True)
class StorageRequest:
    """A volume's needs: ``type_of_storage`` None accepts any type; ``rdma_enabled`` and
    ``multi_attach`` True require a pool offering them."""

    size_gb: int
    type_of_storage: str | None = None
    zone_ids: frozenset[str] | None = None
    pool_id: str | None = None
    rdma_enabled: bool = False
    multi_attach: bool = False
    affinity_rules: tuple[AffinityRule, ...] = ()
    resource_group_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size_gb, bool) or not isinstance(self.size_gb, int) or self.size_gb < 0:
            raise ValueError(f"size_gb must be a non-negative integer, not {self.size_gb!r}")
        if self.zone_ids is not None:
            object.__setattr__(self, "zone_ids", _frozen(self.zone_ids))
        object.__setattr__(self, "affinity_rules", tuple(self.affinity_rules))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizeGb": self.size_gb, "typeOfStorage": self.type_of_storage,
            "zoneIds": None if self.zone_ids is None else sorted(self.zone_ids), "poolId": self.pool_id,
            "rdmaEnabled": self.rdma_enabled, "multiAttach": self.multi_attach,
            "affinityRules": [rule.to_dict() for rule in self.affinity_rules],
            "resourceGroupId": self.resource_group_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StorageRequest":
        zone_ids = data.get("zoneIds")
        return cls(
            int(data["sizeGb"]), data.get("typeOfStorage"), None if zone_ids is None else frozenset(zone_ids),
            data.get("poolId"), bool(data.get("rdmaEnabled", False)), bool(data.get("multiAttach", False)),
            tuple(AffinityRule.from_dict(r) for r in data.get("affinityRules", ())), data.get("resourceGroupId"),
        )


@dataclass(frozen=True, slots=True)
class StorageClaim:
    """Gigabytes held in one pool for one volume; ``source_pool_id``/``source_size_gb`` while a
    migration copies it (both pools hold capacity until confirmed)."""

    resource_id: str
    pool_id: str
    zone_id: str
    nfvi_pop_id: str
    size_gb: int
    request: StorageRequest
    groups: frozenset[str] = frozenset()
    source_pool_id: str | None = None
    source_size_gb: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "resourceId": self.resource_id, "poolId": self.pool_id, "zoneId": self.zone_id,
            "nfviPopId": self.nfvi_pop_id, "sizeGb": self.size_gb, "request": self.request.to_dict(),
            "groups": sorted(self.groups), "sourcePoolId": self.source_pool_id, "sourceSizeGb": self.source_size_gb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StorageClaim":
        return cls(
            data["resourceId"], data["poolId"], data["zoneId"], data["nfviPopId"], int(data["sizeGb"]),
            StorageRequest.from_dict(data["request"]), frozenset(data.get("groups", ())),
            data.get("sourcePoolId"), int(data.get("sourceSizeGb", 0)),
        )


@dataclass(frozen=True, slots=True)
class PoolUsage:
    pool_id: str
    zone_id: str
    type_of_storage: str
    up: bool
    capacity_gb: int
    allocated_gb: int
    volumes: int

    @property
    def free_gb(self) -> int:
        return max(0, self.capacity_gb - self.allocated_gb)


@dataclass(frozen=True, slots=True)
class StorageCapacity:
    """Like :class:`ResourceCapacity`, in GB: ``available`` is free space on pools that are up."""

    zone_id: str | None
    type_of_storage: str | None
    pools: int
    total_gb: int
    allocated_gb: int
    available_gb: int
    unavailable_gb: int
    largest_available_gb: int


class _Pool:
    __slots__ = ("spec", "capacity", "used", "up", "volumes")

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.capacity = spec.allocatable()
        self.used = 0
        self.up = True
        self.volumes: set[str] = set()

    @property
    def free(self) -> int:
        return self.capacity - self.used


_STAGES = ("zone", "poolId", "typeOfStorage", "rdmaEnabled", "multiAttach", "state", "affinity", "currentPool",
           "capacity")


class StoragePlacementState:
    """Pool capacities and volume claims; every public method is atomic under one lock."""

    def __init__(self, pools: Iterable[PoolSpec], strategy: Strategy = Strategy.SPREAD,
                 locator: Locator | None = None, soft_affinity_weight: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, _Pool] = {}
        for spec in pools:
            if spec.pool_id in self._pools:
                raise ValueError(f"duplicate pool id {spec.pool_id!r}")
            self._pools[spec.pool_id] = _Pool(spec)
        self._pop_zones: dict[str, set[str]] = {}
        for pool in self._pools.values():
            self._pop_zones.setdefault(pool.spec.nfvi_pop_id, set()).add(pool.spec.zone_id)
        self._strategy = Strategy(strategy)
        self._locator = locator
        self._soft = soft_affinity_weight
        self._claims: dict[str, StorageClaim] = {}
        self._groups: dict[str, set[str]] = {}
        self._scale = max([p.capacity for p in self._pools.values()], default=1) or 1

    @classmethod
    def from_inventory(cls, inventory: "Inventory", strategy: Strategy = Strategy.SPREAD,
                       locator: Locator | None = None) -> "StoragePlacementState":
        zones = {zone.zoneId: zone for zone in inventory.zones}
        return cls(
            [PoolSpec(p.poolId, p.zoneId, zones[p.zoneId].nfviPopId, p.typeOfStorage, p.capacityGb,
                      p.allocationRatio, p.rdmaEnabled, p.multiAttach, zones[p.zoneId].zoneState.value == "ENABLED")
             for p in inventory.storagePools],
            strategy, locator,
        )

    # ------------------------------------------------------------------ deciding (lock held)

    def _where(self, member: str, scope: AffinityScope, kind: AffinityType) -> tuple[str, str] | None:
        """The (level, place) a member occupies for this scope, or None when it constrains nothing."""
        claim = self._claims.get(member)
        if claim is not None:
            if scope is AffinityScope.NFVI_NODE:
                return ("pool", claim.pool_id)
            return ("zone", claim.zone_id) if scope is AffinityScope.ZONE else ("pop", claim.nfvi_pop_id)
        location = self._locator(member) if self._locator is not None else None
        if location is None:
            return None
        if scope is AffinityScope.NFVI_NODE:
            return ("zone", location.zone_id) if kind is AffinityType.AFFINITY else None
        return ("zone", location.zone_id) if scope is AffinityScope.ZONE else ("pop", location.nfvi_pop_id)

    def _matches(self, pool: _Pool, level: str, place: str) -> bool:
        if level == "pool":
            return pool.spec.pool_id == place
        if level == "zone":
            return pool.spec.zone_id == place
        return pool.spec.nfvi_pop_id == place

    def _rules(self, request: StorageRequest, self_id: str | None, hard: bool
               ) -> tuple[list[tuple[AffinityType, list[tuple[str, str]]]], list[tuple[int, list[tuple[str, str]]]]]:
        """HARD rules as (type, places) filters; SOFT rules as (sign, places) weight terms."""
        filters: list[tuple[AffinityType, list[tuple[str, str]]]] = []
        terms: list[tuple[int, list[tuple[str, str]]]] = []
        for rule in request.affinity_rules:
            if rule.hard and not hard:
                continue
            members = set(rule.members)
            if rule.group_id is not None:
                members |= self._groups.get(rule.group_id, set())
            places = [w for m in members if m != self_id and (w := self._where(m, rule.scope, rule.type)) is not None]
            if not places:
                continue
            if rule.hard:
                if rule.type is AffinityType.AFFINITY and len(set(places)) > 1:
                    raise AffinityUnsatisfiable(
                        f"the members of a HARD {rule.scope.value} affinity rule are already in "
                        f"{len(set(places))} places"
                    )
                filters.append((rule.type, places))
            else:
                terms.append((1 if rule.type is AffinityType.AFFINITY else -1, places))
        return filters, terms

    def _static_stage(self, pool: _Pool, request: StorageRequest, skip: str | None) -> str | None:
        spec = pool.spec
        if not spec.zone_enabled or (request.zone_ids is not None and spec.zone_id not in request.zone_ids):
            return "zone"
        if request.pool_id is not None and spec.pool_id != request.pool_id:
            return "poolId"
        if request.type_of_storage is not None and spec.type_of_storage != request.type_of_storage:
            return "typeOfStorage"
        if request.rdma_enabled and not spec.rdma_enabled:
            return "rdmaEnabled"
        if request.multi_attach and not spec.multi_attach:
            return "multiAttach"
        if not pool.up:
            return "state"
        if spec.pool_id == skip:
            return "currentPool"
        return None

    def _search(self, request: StorageRequest, self_id: str | None, skip: str | None, hard: bool = True
                ) -> tuple[_Pool | None, dict[str, int]]:
        filters, terms = self._rules(request, self_id, hard)
        eliminated = dict.fromkeys(_STAGES, 0)
        best: _Pool | None = None
        best_rank: tuple[float, str] | None = None
        sign = 1 if self._strategy is Strategy.SPREAD else -1
        for pool in self._pools.values():
            stage = self._static_stage(pool, request, skip)
            if stage is None:
                for kind, places in filters:
                    hit = any(self._matches(pool, level, place) for level, place in places)
                    if hit != (kind is AffinityType.AFFINITY):
                        stage = "affinity"
                        break
            if stage is None and pool.free < request.size_gb:
                stage = "capacity"
            if stage is not None:
                eliminated[stage] += 1
                continue
            term = sum(s * sum(1 for level, place in places if self._matches(pool, level, place))
                       for s, places in terms)
            rank = (sign * pool.free / self._scale + self._soft * term, pool.spec.pool_id)
            if best_rank is None or rank[0] > best_rank[0] or (rank[0] == best_rank[0] and rank[1] < best_rank[1]):
                best, best_rank = pool, rank
        return best, eliminated

    def _decide(self, request: StorageRequest, self_id: str | None, skip: str | None = None) -> _Pool:
        pool, eliminated = self._search(request, self_id, skip)
        if pool is not None:
            return pool
        labels = {"zone": "outside the requested or enabled zones", "poolId": "not the requested pool",
                  "typeOfStorage": f"not of type {request.type_of_storage}", "rdmaEnabled": "without RDMA",
                  "multiAttach": "without multi-attach", "state": "failed or down",
                  "affinity": "excluded by HARD affinity rules", "currentPool": "the current pool",
                  "capacity": "short of free capacity"}
        parts = [f"{n} {labels[stage]}" for stage, n in eliminated.items() if n]
        total = len(self._pools)
        reason = (f"no storage pool can take {request.size_gb} GB: of {total} pool{'s' if total != 1 else ''}, "
                  + (", ".join(parts) if parts else "none exist"))
        funnel = Funnel(total, {k: v for k, v in eliminated.items() if v}, reason=reason)
        if any(rule.hard for rule in request.affinity_rules):
            relaxed, _ = self._search(request, self_id, skip, hard=False)
            if relaxed is not None:
                raise AffinityUnsatisfiable(
                    "no storage pool satisfies the HARD affinity rules (pools without them would fit): " + reason,
                    funnel)
        raise NoValidHost(reason, funnel)

    def _record(self, resource_id: str, pool: _Pool, request: StorageRequest, source: tuple[str, int] | None
                ) -> StorageClaim:
        pool.used += request.size_gb
        pool.volumes.add(resource_id)
        groups = frozenset(rule.group_id for rule in request.affinity_rules if rule.group_id)
        claim = StorageClaim(resource_id, pool.spec.pool_id, pool.spec.zone_id, pool.spec.nfvi_pop_id,
                             request.size_gb, request, groups, *(source or (None, 0)))
        self._claims[resource_id] = claim
        for group_id in groups:
            self._groups.setdefault(group_id, set()).add(resource_id)
        return claim

    def _forget_groups(self, claim: StorageClaim) -> None:
        for group_id in claim.groups:
            members = self._groups.get(group_id)
            if members is not None:
                members.discard(claim.resource_id)
                if not members:
                    del self._groups[group_id]

    def _existing(self, resource_id: str) -> StorageClaim:
        claim = self._claims.get(resource_id)
        if claim is None:
            raise ClaimNotFound(f"volume {resource_id!r} has no claim")
        return claim

    # ------------------------------------------------------------------ public API

    def claim(self, resource_id: str, request: StorageRequest) -> StorageClaim:
        with self._lock:
            if resource_id in self._claims:
                raise ClaimConflict(f"volume {resource_id!r} already has a claim")
            return self._record(resource_id, self._decide(request, resource_id), request, None)

    def release(self, resource_id: str) -> StorageClaim | None:
        """Give the gigabytes back (and a migration's source); idempotent."""
        with self._lock:
            claim = self._claims.pop(resource_id, None)
            if claim is None:
                return None
            pool = self._pools[claim.pool_id]
            pool.used -= claim.size_gb
            pool.volumes.discard(resource_id)
            if claim.source_pool_id is not None:
                source = self._pools[claim.source_pool_id]
                source.used -= claim.source_size_gb
                source.volumes.discard(resource_id)
            self._forget_groups(claim)
            return claim

    def resize(self, resource_id: str, size_gb: int) -> StorageClaim:
        """Extend (or shrink) in place; growth needs free space in the same pool, which must be up."""
        if size_gb < 0:
            raise ValueError("size_gb must be >= 0")
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source_pool_id is not None:
                raise ClaimConflict(f"volume {resource_id!r} is being moved; confirm or revert first")
            pool = self._pools[claim.pool_id]
            delta = size_gb - claim.size_gb
            if delta > 0 and (not pool.up or pool.free < delta):
                state = "is down" if not pool.up else f"has {max(0, pool.free)} GB free"
                raise NoValidHost(f"cannot extend {resource_id} by {delta} GB: pool {pool.spec.pool_id} {state}")
            pool.used += delta
            updated = replace(claim, size_gb=size_gb, request=replace(claim.request, size_gb=size_gb))
            self._claims[resource_id] = updated
            return updated

    def move(self, resource_id: str, zone_ids: Iterable[str] | None = None, pool_id: str | None = None) -> StorageClaim:
        """Claim another pool for a migration; the source keeps its space until confirmed."""
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source_pool_id is not None:
                raise ClaimConflict(f"volume {resource_id!r} is already being moved")
            request = replace(claim.request, pool_id=pool_id,
                              zone_ids=claim.request.zone_ids if zone_ids is None else frozenset(zone_ids))
            pool = self._decide(request, resource_id, skip=claim.pool_id)
            del self._claims[resource_id]
            self._forget_groups(claim)
            return self._record(resource_id, pool, request, (claim.pool_id, claim.size_gb))

    def confirm_move(self, resource_id: str) -> StorageClaim:
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source_pool_id is None:
                raise ClaimConflict(f"volume {resource_id!r} is not being moved")
            source = self._pools[claim.source_pool_id]
            source.used -= claim.source_size_gb
            source.volumes.discard(resource_id)
            confirmed = replace(claim, source_pool_id=None, source_size_gb=0)
            self._claims[resource_id] = confirmed
            return confirmed

    def revert_move(self, resource_id: str) -> StorageClaim:
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source_pool_id is None:
                raise ClaimConflict(f"volume {resource_id!r} is not being moved")
            target = self._pools[claim.pool_id]
            target.used -= claim.size_gb
            target.volumes.discard(resource_id)
            source = self._pools[claim.source_pool_id]
            restored = replace(claim, pool_id=source.spec.pool_id, zone_id=source.spec.zone_id,
                               nfvi_pop_id=source.spec.nfvi_pop_id, size_gb=claim.source_size_gb,
                               source_pool_id=None, source_size_gb=0)
            self._claims[resource_id] = restored
            return restored

    def load(self, claims: Iterable[StorageClaim]) -> LoadReport:
        """Rebuild from persisted claims (recorded even on full or failed pools; unknown pools reported)."""
        with self._lock:
            loaded, unknown = 0, []
            for claim in claims:
                if claim.resource_id in self._claims:
                    raise ClaimConflict(f"volume {claim.resource_id!r} already has a claim")
                pool = self._pools.get(claim.pool_id)
                if pool is None:
                    unknown.append(claim.resource_id)
                    continue
                if claim.source_pool_id is not None and claim.source_pool_id not in self._pools:
                    claim = replace(claim, source_pool_id=None, source_size_gb=0)
                pool.used += claim.size_gb
                pool.volumes.add(claim.resource_id)
                if claim.source_pool_id is not None:
                    source = self._pools[claim.source_pool_id]
                    source.used += claim.source_size_gb
                    source.volumes.add(claim.resource_id)
                self._claims[claim.resource_id] = claim
                for group_id in claim.groups:
                    self._groups.setdefault(group_id, set()).add(claim.resource_id)
                loaded += 1
            over = sorted(p.spec.pool_id for p in self._pools.values() if p.free < 0)
            return LoadReport(loaded, tuple(unknown), tuple(over))

    def pool_down(self, pool_id: str) -> frozenset[str]:
        """The pool failed: no new volumes go there; returns the volumes in it."""
        with self._lock:
            pool = self._pool(pool_id)
            pool.up = False
            return frozenset(pool.volumes)

    def pool_up(self, pool_id: str) -> None:
        with self._lock:
            self._pool(pool_id).up = True

    def _pool(self, pool_id: str) -> _Pool:
        pool = self._pools.get(pool_id)
        if pool is None:
            raise KeyError(f"pool {pool_id!r} is not in the inventory")
        return pool

    def get(self, resource_id: str) -> StorageClaim | None:
        with self._lock:
            return self._claims.get(resource_id)

    def locate(self, resource_id: str) -> Location | None:
        """Where a volume is; ``host_id`` is its pool id (pool volumes live on no compute host)."""
        claim = self._claims.get(resource_id)
        return None if claim is None else Location(claim.pool_id, claim.zone_id, claim.nfvi_pop_id)

    def claims(self) -> list[StorageClaim]:
        with self._lock:
            return list(self._claims.values())

    def usage(self, zone_id: str | None = None) -> list[PoolUsage]:
        with self._lock:
            return [PoolUsage(p.spec.pool_id, p.spec.zone_id, p.spec.type_of_storage, p.up, p.capacity, p.used,
                              len(p.volumes))
                    for p in self._pools.values() if zone_id is None or p.spec.zone_id == zone_id]

    def capacity(self, zone_id: str | None = None, type_of_storage: str | None = None) -> StorageCapacity:
        """Totals matching what :meth:`claim` allows (free space on pools that are up)."""
        with self._lock:
            if zone_id is not None and not any(p.spec.zone_id == zone_id for p in self._pools.values()):
                raise UnknownZone(f"zone {zone_id!r} has no storage pool")
            total = allocated = available = unavailable = largest = count = 0
            for pool in self._pools.values():
                if zone_id is not None and pool.spec.zone_id != zone_id:
                    continue
                if type_of_storage is not None and pool.spec.type_of_storage != type_of_storage:
                    continue
                count += 1
                free = max(0, pool.free)
                total += pool.capacity
                allocated += pool.used
                if pool.up and pool.spec.zone_enabled:
                    available += free
                    largest = max(largest, free)
                else:
                    unavailable += free
            return StorageCapacity(zone_id, type_of_storage, count, total, allocated, available, unavailable, largest)

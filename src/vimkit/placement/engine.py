"""The placement engine: in-memory host capacities and claims, decided and recorded atomically.

How Nova does it, and what is kept: Nova filters every host (AvailabilityZoneFilter,
ComputeFilter, ServerGroup(Anti)AffinityFilter, …), weighs the survivors (RAM/CPU/Disk weighers:
positive multipliers spread, negative ones stack; ServerGroupSoft(Anti)AffinityWeigher for the
soft policies) and then claims in Placement, where capacity is ``(total - reserved) *
allocation_ratio`` and a conflicting concurrent claim is retried. Here the same filters, weights
and capacity formula apply, but decision and claim happen under one lock in one process, so a
claim can never be lost to a race and no retry loop is needed.

How hosts are found fast (buckets, indexes, ranks) is :mod:`vimkit.placement.search`; how rules
become filters and weights is :mod:`vimkit.placement.affinity`; docs/infrastructure.md has the whole
picture.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from vimkit.placement.affinity import Plan, Resolver
from vimkit.placement.explain import explain_failure
from vimkit.placement.index import MAX_HOSTS
from vimkit.placement.model import (
    AffinityUnsatisfiable,
    CapacityView,
    Claim,
    ClaimConflict,
    ClaimNotFound,
    HostHold,
    HostSpec,
    HostUsage,
    LoadReport,
    Location,
    MoveTarget,
    NoValidHost,
    Placement,
    PlacementConfig,
    PlacementRequest,
    UnknownHost,
    UnknownZone,
)
from vimkit.placement.records import HostRecord, capacity_view
from vimkit.placement.search import Searcher

if TYPE_CHECKING:
    from vimkit.infra.inventory import Inventory

def _groups_of(request: PlacementRequest) -> frozenset[str]:
    return frozenset(rule.group_id for rule in request.affinity_rules if rule.group_id)


class PlacementState:
    """Host capacities, usage and claims; every public method is atomic under one lock.

    Thread-safe and synchronous on purpose: a decision takes microseconds, so async callers call
    it directly (no await point can split "decide" from "record").
    """

    def __init__(self, hosts: Iterable[HostSpec], config: PlacementConfig | None = None,
                 zones: Mapping[str, str] | None = None) -> None:
        """``zones`` (zone id → NFVI-PoP id) names zones that have no hosts yet, so that their
        capacity reads as zero rather than unknown."""
        self.config = config or PlacementConfig()
        self._lock = threading.Lock()
        self._hosts: list[HostRecord] = []
        self._by_id: dict[str, HostRecord] = {}
        self._zone_pop: dict[str, str] = dict(zones or {})
        for spec in hosts:
            if spec.host_id in self._by_id:
                raise ValueError(f"duplicate host id {spec.host_id!r}")
            host = HostRecord(len(self._hosts), spec)
            self._hosts.append(host)
            self._by_id[spec.host_id] = host
            self._zone_pop[spec.zone_id] = spec.nfvi_pop_id
        if len(self._hosts) > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts are supported")
        self._pop_zones: dict[str, set[str]] = {}
        for zone_id, pop_id in self._zone_pop.items():
            self._pop_zones.setdefault(pop_id, set()).add(zone_id)
        self._claims: dict[str, Claim] = {}
        self._groups: dict[str, set[str]] = {}
        self._resolver = Resolver(self._claims, self._groups, {h.host_id: h.no for h in self._hosts},
                                  self._pop_zones)
        self._searcher = Searcher(self._hosts, self._by_id, self.config)
        self._buckets = self._searcher.buckets

    @classmethod
    def from_inventory(cls, inventory: "Inventory", config: PlacementConfig | None = None) -> "PlacementState":
        """Build the engine from the declared inventory (hosts, their zones and PoPs)."""
        zones = {zone.zoneId: zone for zone in inventory.zones}
        specs = [
            HostSpec(
                host_id=h.hostId, zone_id=h.zoneId, nfvi_pop_id=zones[h.zoneId].nfviPopId,
                vcpus=h.vcpus, memory_mb=h.memoryMb, disk_gb=h.diskGb, reserved_vcpus=h.reservedVcpus,
                reserved_memory_mb=h.reservedMemoryMb, reserved_disk_gb=h.reservedDiskGb,
                cpu_allocation_ratio=h.cpuAllocationRatio, ram_allocation_ratio=h.ramAllocationRatio,
                disk_allocation_ratio=h.diskAllocationRatio, cpu_architecture=h.cpuArchitecture,
                traits=frozenset(h.traits), admin_state=h.adminState.value,
                zone_enabled=zones[h.zoneId].zoneState.value == "ENABLED",
            )
            for h in inventory.hosts
        ]
        return cls(specs, config, {zone.zoneId: zone.nfviPopId for zone in inventory.zones})

    # ------------------------------------------------------------------ bookkeeping (lock held)

    def _adjust(self, host: HostRecord, dv: int, dm: int, dd: int) -> None:
        """Change a host's usage and keep its index positions and block maxima exact."""
        index = host.bucket.index if host.indexed and host.bucket is not None else None
        if index is not None:
            index.remove(host, host.key)
        host.used_v += dv
        host.used_m += dm
        host.used_d += dd
        self._searcher.rescore(host)
        if index is not None:
            index.insert(host, host.key)

    def _set_schedulable(self, host: HostRecord) -> None:
        want = host.schedulable
        if want == host.indexed:
            return
        assert host.bucket is not None
        if want:
            host.bucket.index.insert(host, host.key)
        else:
            host.bucket.index.remove(host, host.key)
        host.indexed = want

    def _host(self, host_id: str) -> HostRecord:
        host = self._by_id.get(host_id)
        if host is None:
            raise UnknownHost(f"host {host_id!r} is not in the inventory")
        return host

    # ------------------------------------------------------------------ deciding (lock held)

    def _plan(self, request: PlacementRequest, self_id: str | None, hard: bool = True) -> Plan:
        return self._resolver.plan(request, self_id, hard)

    def _decide(self, request: PlacementRequest, self_id: str | None, skip: set[int]) -> tuple[HostRecord, int]:
        """Decide (the host and its affinity term) or raise NoValidHost / AffinityUnsatisfiable."""
        plan = self._plan(request, self_id)
        host, term = self._searcher.search(request, plan, skip)
        if host is not None:
            return host, term
        funnel = explain_failure(self._buckets, self._hosts, request, plan, skip)
        if any(rule.hard for rule in request.affinity_rules):
            relaxed, _ = self._searcher.search(request, self._plan(request, self_id, hard=False), skip)
            if relaxed is not None:
                raise AffinityUnsatisfiable(
                    "no host satisfies the HARD affinity rules (hosts without them would fit): " + funnel.reason,
                    funnel,
                )
        raise NoValidHost(funnel.reason, funnel)

    # ------------------------------------------------------------------ public API

    def decide(self, request: PlacementRequest) -> Placement:
        """Where ``request`` would go now, without recording anything (a dry run)."""
        with self._lock:
            host, term = self._decide(request, None, set())
            return Placement(host.host_id, host.zone_id, host.pop_id, self._searcher.weight(host, term))

    def claim(self, resource_id: str, request: PlacementRequest) -> Claim:
        """Decide and record in one step; the capacity is held until :meth:`release`."""
        with self._lock:
            if resource_id in self._claims:
                raise ClaimConflict(f"resource {resource_id!r} already has a claim")
            host, _ = self._decide(request, resource_id, set())
            return self._record(resource_id, host, request, None)

    def _record(self, resource_id: str, host: HostRecord, request: PlacementRequest, source: HostHold | None) -> Claim:
        self._adjust(host, request.vcpus, request.memory_mb, request.disk_gb)
        groups = _groups_of(request)
        claim = Claim(resource_id, host.host_id, host.zone_id, host.pop_id, request.vcpus, request.memory_mb,
                      request.disk_gb, request, groups, source)
        self._claims[resource_id] = claim
        host.resources.add(resource_id)
        for group_id in groups:
            self._groups.setdefault(group_id, set()).add(resource_id)
        return claim

    def _forget_groups(self, claim: Claim) -> None:
        for group_id in claim.groups:
            members = self._groups.get(group_id)
            if members is not None:
                members.discard(claim.resource_id)
                if not members:
                    del self._groups[group_id]

    def release(self, resource_id: str) -> Claim | None:
        """Give back everything the resource holds (also a move's source); None if it held nothing.

        Idempotent, so that cleaning up after a failed allocation never fails itself.
        """
        with self._lock:
            claim = self._claims.pop(resource_id, None)
            if claim is None:
                return None
            host = self._by_id[claim.host_id]
            self._adjust(host, -claim.vcpus, -claim.memory_mb, -claim.disk_gb)
            host.resources.discard(resource_id)
            if claim.source is not None:
                source = self._by_id[claim.source.host_id]
                self._adjust(source, -claim.source.vcpus, -claim.source.memory_mb, -claim.source.disk_gb)
                source.resources.discard(resource_id)
            self._forget_groups(claim)
            return claim

    def _existing(self, resource_id: str) -> Claim:
        claim = self._claims.get(resource_id)
        if claim is None:
            raise ClaimNotFound(f"resource {resource_id!r} has no claim")
        return claim

    def resize(self, resource_id: str, new_request: PlacementRequest) -> Claim:
        """Change the amounts in place. Growth needs free capacity on the same host, which must
        be ENABLED and up; otherwise NoValidHost says so and the caller may :meth:`move` instead."""
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source is not None:
                raise ClaimConflict(f"resource {resource_id!r} is being moved; confirm or revert first")
            host = self._by_id[claim.host_id]
            dv = new_request.vcpus - claim.vcpus
            dm = new_request.memory_mb - claim.memory_mb
            dd = new_request.disk_gb - claim.disk_gb
            problems = []
            if new_request.cpu_architecture not in (None, host.arch):
                problems.append(f"is {host.arch}, not {new_request.cpu_architecture}")
            missing = new_request.required_traits - host.traits
            if missing:
                problems.append(f"lacks traits {', '.join(sorted(missing))}")
            if (dv > 0 or dm > 0 or dd > 0) and not host.schedulable:
                problems.append(f"takes no more resources ({host.admin_state}{'' if host.up else ', down'})")
            deltas = ((dv, host.free_v, "vCPU"), (dm, host.free_m, "MB"), (dd, host.free_d, "GB"))
            short = [f"{need} more {unit} (free {free})" for need, free, unit in deltas if need > max(0, free)]
            if short:
                problems.append("lacks " + ", ".join(short))
            if problems:
                raise NoValidHost(f"cannot resize {resource_id} in place: host {host.host_id} " + "; ".join(problems)
                                  + "; migrate it to resize")
            self._adjust(host, dv, dm, dd)
            self._forget_groups(claim)
            new_claim = replace(claim, vcpus=new_request.vcpus, memory_mb=new_request.memory_mb,
                                disk_gb=new_request.disk_gb, request=new_request, groups=_groups_of(new_request))
            self._claims[resource_id] = new_claim
            for group_id in new_claim.groups:
                self._groups.setdefault(group_id, set()).add(resource_id)
            return new_claim

    def move(self, resource_id: str, target: MoveTarget | None = None,
             request: PlacementRequest | None = None) -> Claim:
        """Claim a new host for a migration (never the current one) while the source keeps its
        capacity until :meth:`confirm_move` (or :meth:`revert_move` gives the target back).
        ``request`` changes the amounts too (a resize by migration)."""
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source is not None:
                raise ClaimConflict(f"resource {resource_id!r} is already being moved")
            base = request or claim.request
            target = target or MoveTarget()
            wanted = PlacementRequest(
                base.vcpus, base.memory_mb, base.disk_gb,
                base.zone_ids if target.zone_ids is None else target.zone_ids, target.host_id,
                base.cpu_architecture, base.required_traits,
                base.affinity_rules if target.affinity_rules is None else target.affinity_rules,
                base.resource_group_id,
            )
            current = self._by_id[claim.host_id]
            if wanted.host_id == current.host_id:
                raise NoValidHost(f"{resource_id} is already on host {current.host_id}")
            host, _ = self._decide(wanted, resource_id, {current.no})
            hold = HostHold(current.host_id, current.zone_id, current.pop_id, claim.vcpus, claim.memory_mb,
                            claim.disk_gb, claim.request)
            self._claims.pop(resource_id)
            self._forget_groups(claim)
            return self._record(resource_id, host, wanted, hold)

    def confirm_move(self, resource_id: str) -> Claim:
        """The migration succeeded: give the source host its capacity back."""
        with self._lock:
            claim = self._existing(resource_id)
            if claim.source is None:
                raise ClaimConflict(f"resource {resource_id!r} is not being moved")
            source = self._by_id[claim.source.host_id]
            self._adjust(source, -claim.source.vcpus, -claim.source.memory_mb, -claim.source.disk_gb)
            source.resources.discard(resource_id)
            confirmed = replace(claim, source=None)
            self._claims[resource_id] = confirmed
            return confirmed

    def revert_move(self, resource_id: str) -> Claim:
        """The migration failed: give the target back; the resource is where it was."""
        with self._lock:
            claim = self._existing(resource_id)
            hold = claim.source
            if hold is None:
                raise ClaimConflict(f"resource {resource_id!r} is not being moved")
            target = self._by_id[claim.host_id]
            self._adjust(target, -claim.vcpus, -claim.memory_mb, -claim.disk_gb)
            target.resources.discard(resource_id)
            self._forget_groups(claim)
            restored = Claim(resource_id, hold.host_id, hold.zone_id, hold.nfvi_pop_id, hold.vcpus, hold.memory_mb,
                             hold.disk_gb, hold.request, _groups_of(hold.request))
            self._claims[resource_id] = restored
            for group_id in restored.groups:
                self._groups.setdefault(group_id, set()).add(resource_id)
            return restored

    def load(self, claims: Iterable[Claim]) -> LoadReport:
        """Rebuild usage from persisted claims at start. Claims are taken as facts (the resources
        exist), so they are recorded even on disabled, down or overcommitted hosts — which the
        report lists; a claim on a host no longer in the inventory is not loaded but reported."""
        with self._lock:
            loaded, unknown = 0, []
            touched: set[HostRecord] = set()
            for claim in claims:
                if claim.resource_id in self._claims:
                    raise ClaimConflict(f"resource {claim.resource_id!r} already has a claim")
                host = self._by_id.get(claim.host_id)
                if host is None:
                    unknown.append(claim.resource_id)
                    continue
                source = claim.source
                if source is not None and source.host_id not in self._by_id:
                    claim = replace(claim, source=None)  # the source host is gone: nothing to hold
                    source = None
                self._adjust(host, claim.vcpus, claim.memory_mb, claim.disk_gb)
                host.resources.add(claim.resource_id)
                touched.add(host)
                if source is not None:
                    origin = self._by_id[source.host_id]
                    self._adjust(origin, source.vcpus, source.memory_mb, source.disk_gb)
                    origin.resources.add(claim.resource_id)
                    touched.add(origin)
                self._claims[claim.resource_id] = claim
                for group_id in claim.groups:
                    self._groups.setdefault(group_id, set()).add(claim.resource_id)
                loaded += 1
            over = sorted(h.host_id for h in touched if h.free_v < 0 or h.free_m < 0 or h.free_d < 0)
            return LoadReport(loaded, tuple(unknown), tuple(over))

    def set_admin_state(self, host_id: str, state: str) -> HostUsage:
        """ENABLED, DISABLED or MAINTENANCE; only ENABLED hosts take new resources."""
        value = getattr(state, "value", state)
        if value not in ("ENABLED", "DISABLED", "MAINTENANCE"):
            raise ValueError(f"admin state must be ENABLED, DISABLED or MAINTENANCE, not {value!r}")
        with self._lock:
            host = self._host(host_id)
            host.admin_state = value
            self._set_schedulable(host)
            return host.usage()

    def host_down(self, host_id: str) -> frozenset[str]:
        """The host stopped answering: take it out of placement; returns the resources on it."""
        with self._lock:
            host = self._host(host_id)
            host.up = False
            self._set_schedulable(host)
            return frozenset(host.resources)

    def host_up(self, host_id: str) -> None:
        with self._lock:
            host = self._host(host_id)
            host.up = True
            self._set_schedulable(host)

    # ------------------------------------------------------------------ views

    def get(self, resource_id: str) -> Claim | None:
        with self._lock:
            return self._claims.get(resource_id)

    def locate(self, resource_id: str) -> Location | None:
        """Where a placed resource is (for the storage engine's affinity with computes)."""
        claim = self._claims.get(resource_id)  # a single dict read is atomic under the GIL
        return None if claim is None else Location(claim.host_id, claim.zone_id, claim.nfvi_pop_id)

    def claims(self) -> list[Claim]:
        with self._lock:
            return list(self._claims.values())

    def group_members(self, group_id: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._groups.get(group_id, ()))

    def resources_on(self, host_id: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._host(host_id).resources)

    def host_usage(self, host_id: str) -> HostUsage:
        with self._lock:
            return self._host(host_id).usage()

    def usage(self, zone_id: str | None = None) -> list[HostUsage]:
        """Every host (of one zone) with capacity after ratios, use and state."""
        with self._lock:
            if zone_id is not None and zone_id not in self._zone_pop:
                raise UnknownZone(f"zone {zone_id!r} is not in the inventory")
            return [h.usage() for h in self._hosts if zone_id is None or h.zone_id == zone_id]

    def zones(self) -> dict[str, str]:
        """Zone id → NFVI-PoP id of every zone the engine knows."""
        return dict(self._zone_pop)

    def capacity(self, zone_id: str | None = None) -> CapacityView:
        """Totals that match what :meth:`claim` allows: ``available`` is the sum of free capacity
        on schedulable hosts, so unit-sized claims could take exactly that much."""
        with self._lock:
            if zone_id is not None and zone_id not in self._zone_pop:
                raise UnknownZone(f"zone {zone_id!r} is not in the inventory")
            return capacity_view(self._hosts, zone_id)

    def check_invariants(self) -> None:
        """Recompute usage from the claims and compare (tests and debugging; O(n))."""
        with self._lock:
            expected = {h.no: [0, 0, 0] for h in self._hosts}
            for claim in self._claims.values():
                row = expected[self._by_id[claim.host_id].no]
                row[0] += claim.vcpus
                row[1] += claim.memory_mb
                row[2] += claim.disk_gb
                if claim.source is not None:
                    row = expected[self._by_id[claim.source.host_id].no]
                    row[0] += claim.source.vcpus
                    row[1] += claim.source.memory_mb
                    row[2] += claim.source.disk_gb
            for host in self._hosts:
                assert [host.used_v, host.used_m, host.used_d] == expected[host.no], f"usage drift on {host.host_id}"
                assert host.indexed == host.schedulable, f"index membership wrong for {host.host_id}"
            for bucket in self._buckets:
                bucket.index.check()
                assert sorted(k for block in bucket.index.keys for k in block) == sorted(
                    h.key for h in bucket.hosts if h.indexed), "index holds the wrong hosts"


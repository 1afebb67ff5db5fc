"""The engine's mutable per-host records and the views computed from them.

Internal to :mod:`vimkit.placement`: the engine owns these objects and mutates them under its lock;
callers only ever see the frozen views (:class:`HostUsage`, :class:`CapacityView`).
"""

from __future__ import annotations

from collections.abc import Iterable

from vimkit.placement.index import SortedHosts
from vimkit.placement.model import CapacityView, HostSpec, HostUsage, ResourceCapacity


class HostRecord:
    """One host's capacity, usage, state and index key (slots: 100,000 of these must stay small
    and fast to touch)."""

    __slots__ = (
        "no", "host_id", "zone_id", "pop_id", "arch", "traits", "spec", "cap_v", "cap_m", "cap_d",
        "used_v", "used_m", "used_d", "free_v", "free_m", "free_d", "key", "admin_state", "up",
        "zone_enabled", "bucket", "indexed", "resources",
    )

    def __init__(self, no: int, spec: HostSpec) -> None:
        self.no = no
        self.host_id = spec.host_id
        self.zone_id = spec.zone_id
        self.pop_id = spec.nfvi_pop_id
        self.arch = spec.cpu_architecture
        self.traits = spec.traits
        self.spec = spec
        self.cap_v, self.cap_m, self.cap_d = spec.capacity()
        self.used_v = self.used_m = self.used_d = 0
        self.free_v, self.free_m, self.free_d = self.cap_v, self.cap_m, self.cap_d
        self.key = 0
        self.admin_state = spec.admin_state
        self.up = True
        self.zone_enabled = spec.zone_enabled
        self.bucket: Bucket | None = None
        self.indexed = False  # in its bucket's index, i.e. schedulable when last updated
        self.resources: set[str] = set()

    @property
    def schedulable(self) -> bool:
        return self.admin_state == "ENABLED" and self.up and self.zone_enabled

    def usage(self) -> HostUsage:
        return HostUsage(
            self.host_id, self.zone_id, self.pop_id, self.admin_state, self.up, self.indexed,
            self.cap_v, self.cap_m, self.cap_d, self.used_v, self.used_m, self.used_d, len(self.resources),
        )


class Bucket:
    """Hosts sharing zone, architecture and traits: the unit the static filters act on."""

    __slots__ = ("zone_id", "pop_id", "arch", "traits", "zone_enabled", "hosts", "index")

    def __init__(self, zone_id: str, pop_id: str, arch: str, traits: frozenset[str], enabled: bool) -> None:
        self.zone_id = zone_id
        self.pop_id = pop_id
        self.arch = arch
        self.traits = traits
        self.zone_enabled = enabled
        self.hosts: list[HostRecord] = []
        self.index = SortedHosts()


def capacity_view(hosts: Iterable[HostRecord], zone_id: str | None) -> CapacityView:
    """Sum capacities the way claims consume them: free capacity counts as ``available`` only on
    hosts in the index (schedulable), and an overcommitted host counts as having none free."""
    sums = [[0, 0, 0, 0, 0] for _ in range(3)]  # total, allocated, available, unavailable, largest
    count = schedulable = 0
    for host in hosts:
        if zone_id is not None and host.zone_id != zone_id:
            continue
        count += 1
        schedulable += host.indexed
        for row, cap, used in ((sums[0], host.cap_v, host.used_v), (sums[1], host.cap_m, host.used_m),
                               (sums[2], host.cap_d, host.used_d)):
            free = cap - used if cap > used else 0
            row[0] += cap
            row[1] += used
            if host.indexed:
                row[2] += free
                row[4] = max(row[4], free)
            else:
                row[3] += free
    vcpus, memory, disk = (ResourceCapacity(*row) for row in sums)
    return CapacityView(zone_id, count, schedulable, vcpus, memory, disk)

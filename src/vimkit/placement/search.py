"""Scoring hosts and finding the best one: keys, buckets and the scan across them.

Hosts with the same zone, CPU architecture and traits form a :class:`Bucket`; the static filters
select buckets (cached per combination), never hosts. Each bucket keeps its schedulable hosts in a
:class:`~vimkit.placement.index.SortedHosts` ordered by a key ``(score << HOST_BITS) | host_no``:

- SPREAD scores ``sum(w_r * free_r / scale_r) / sum(w_r)`` (``scale_r``: the largest host
  capacity of resource ``r``) — Nova's normalised RAM/CPU/Disk weighers with fixed bounds, so that
  a host's score does not depend on the other candidates and can be indexed — and scans from the
  most free end: the top host nearly always fits.
- PACK is a tightest fit: it scores the host's *bottleneck* ``min_r(free_r / scale_r)`` and takes
  the lowest that fits. A summed score would rank a host whose memory is full but whose disk is
  empty as "half free", and a least-free scan would wade through such hosts; by the bottleneck,
  full hosts sink to the bottom, and since a host that fits has a bottleneck of at least
  ``min_r(request_r / scale_r)``, the scan starts there with a bisection.

SOFT affinity terms add ``soft_unit * term`` to a host's rank; zone-level terms are constant within
a bucket and shift its bound, host-level terms are weighed host by host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter

from vimkit.placement.affinity import Plan
from vimkit.placement.index import HOST_BITS
from vimkit.placement.model import AffinityUnsatisfiable, PlacementConfig, PlacementRequest, Strategy, UnknownHost
from vimkit.placement.records import Bucket, HostRecord

SCORE_UNIT = 1_000_000  # scores are kept in millionths so that keys are integers
_BUCKET_CACHE_LIMIT = 4096
_first = itemgetter(0)


def fits(host: HostRecord, request: PlacementRequest) -> bool:
    return host.free_v >= request.vcpus and host.free_m >= request.memory_mb and host.free_d >= request.disk_gb


class Searcher:
    """Owns the buckets and their indexes; ``rescore`` keeps a host's key current, ``search``
    finds the best host. Callers hold the engine's lock around every call."""

    def __init__(self, hosts: Sequence[HostRecord], by_id: Mapping[str, HostRecord], config: PlacementConfig) -> None:
        self._hosts = hosts
        self._by_id = by_id
        self.config = config
        self._bucket_cache: dict[tuple[object, ...], tuple[Bucket, ...]] = {}
        weights = (config.cpu_weight, config.ram_weight, config.disk_weight)
        scale = (max([h.cap_v for h in hosts], default=1) or 1, max([h.cap_m for h in hosts], default=1) or 1,
                 max([h.cap_d for h in hosts], default=1) or 1)
        self.descending = config.strategy is Strategy.SPREAD
        self.sign = 1 if self.descending else -1
        if self.descending:  # weighted share of the free capacity
            self._mult = tuple(w / sum(weights) / s * SCORE_UNIT for w, s in zip(weights, scale))
        else:  # per-resource share; resources weighted 0 take no part in the bottleneck
            self._mult = tuple(SCORE_UNIT / s if w > 0 else 0.0 for w, s in zip(weights, scale))
        # One unit of affinity term is worth the whole score range.
        self.soft_unit = round(config.soft_affinity_weight * SCORE_UNIT) << HOST_BITS
        buckets: dict[tuple[str, str, frozenset[str]], Bucket] = {}
        for host in hosts:
            self.rescore(host)
            bucket_key = (host.zone_id, host.arch, host.traits)
            bucket = buckets.get(bucket_key)
            if bucket is None:
                bucket = buckets[bucket_key] = Bucket(host.zone_id, host.pop_id, host.arch, host.traits,
                                                      host.zone_enabled)
            bucket.hosts.append(host)
            host.bucket = bucket
            host.indexed = host.schedulable
        self.buckets = list(buckets.values())
        for bucket in self.buckets:
            bucket.index.build([(h.key, h) for h in bucket.hosts if h.indexed])

    def rescore(self, host: HostRecord) -> None:
        """Recompute free amounts and the index key (SPREAD: weighted sum; PACK: bottleneck)."""
        free_v = host.free_v = host.cap_v - host.used_v
        free_m = host.free_m = host.cap_m - host.used_m
        free_d = host.free_d = host.cap_d - host.used_d
        free_v, free_m, free_d = max(0, free_v), max(0, free_m), max(0, free_d)
        mv, mm, md = self._mult
        if self.descending:
            score = mv * free_v + mm * free_m + md * free_d
        else:
            score = min([share for share, m in ((mv * free_v, mv), (mm * free_m, mm), (md * free_d, md)) if m])
        host.key = (int(score) << HOST_BITS) | host.no

    def buckets_for(self, request: PlacementRequest) -> tuple[Bucket, ...]:
        """Buckets passing the static filters (zone, zone state, architecture, traits); cached."""
        cache_key = (request.zone_ids, request.cpu_architecture, request.required_traits)
        cached = self._bucket_cache.get(cache_key)
        if cached is None:
            cached = tuple(
                b for b in self.buckets
                if b.zone_enabled
                and (request.zone_ids is None or b.zone_id in request.zone_ids)
                and (request.cpu_architecture is None or b.arch == request.cpu_architecture)
                and request.required_traits <= b.traits
            )
            if len(self._bucket_cache) >= _BUCKET_CACHE_LIMIT:
                self._bucket_cache.clear()
            self._bucket_cache[cache_key] = cached
        return cached

    def search(self, request: PlacementRequest, plan: Plan, skip: set[int]) -> tuple[HostRecord | None, int]:
        """The best host for ``request`` under ``plan`` and its affinity term, or (None, 0).

        A host's rank is ``sign * key + soft * term``: integers, so exact, and since the key ends
        with the host number no two hosts ever tie. A bucket's bound is the rank of its top host;
        the bucket with the highest bound is scanned first, and a bucket whose bound cannot beat
        the best rank found is never scanned.
        """
        sign, descending = self.sign, self.descending
        soft = self.soft_unit
        min_key = self.min_key(request)
        buckets = self.buckets_for(request)
        if plan.allowed_zones is not None or plan.excluded_zones:
            buckets = tuple(b for b in buckets if plan.zone_ok(b.zone_id))
        if plan.excluded_nos:
            skip = skip | plan.excluded_nos
        pinned: HostRecord | None = None
        if request.host_id is not None:
            pinned = self._by_id.get(request.host_id)
            if pinned is None:
                raise UnknownHost(f"host {request.host_id!r} is not in the inventory")
        if plan.required_no is not None:
            required = self._hosts[plan.required_no]
            if pinned is not None and pinned is not required:
                raise AffinityUnsatisfiable(
                    f"hostId {pinned.host_id} contradicts a HARD NFVI_NODE affinity rule "
                    f"(its members are on {required.host_id})"
                )
            pinned = required
        zone_terms = plan.zone_terms
        if pinned is not None:
            if (pinned.bucket in buckets and pinned.indexed and pinned.no not in skip
                    and fits(pinned, request)):
                return pinned, plan.host_terms.get(pinned.no, 0) + zone_terms.get(pinned.zone_id, 0)
            return None, 0
        best: HostRecord | None = None
        best_rank = best_term = 0
        if plan.host_terms:
            bucket_set = set(buckets)
            for no, host_term in plan.host_terms.items():
                host = self._hosts[no]
                if host.bucket in bucket_set and host.indexed and no not in skip and fits(host, request):
                    term = host_term + zone_terms.get(host.zone_id, 0)
                    rank = sign * host.key + soft * term
                    if best is None or rank > best_rank:
                        best, best_rank, best_term = host, rank, term
            skip = skip | plan.host_terms.keys()
        candidates: list[tuple[int, int, Bucket]] = []
        for bucket in buckets:
            index = bucket.index
            lasts = index.lasts
            if not lasts:
                continue
            if descending:
                top = lasts[-1]
            else:
                ceiling = index.ceiling(min_key)
                if ceiling is None:
                    continue
                top = ceiling
            zone_term = zone_terms.get(bucket.zone_id, 0) if zone_terms else 0
            candidates.append((sign * top + soft * zone_term, zone_term, bucket))
        if len(candidates) > 1:
            candidates.sort(key=_first, reverse=True)
        vcpus, memory, disk = request.vcpus, request.memory_mb, request.disk_gb
        for bound, zone_term, bucket in candidates:
            stop_key = None
            if best is not None:
                if bound <= best_rank:
                    break
                need = best_rank - soft * zone_term  # a host must reach sign * key > need
                if descending:
                    stop_key = need + 1 if need >= 0 else None
                else:
                    stop_key = -need - 1
                    if stop_key < 0:
                        continue
            found = bucket.index.first_fit(vcpus, memory, disk, skip, descending, stop_key, min_key)
            if found is None:
                continue
            host = self._hosts[found.no]
            rank = sign * host.key + soft * zone_term
            if best is None or rank > best_rank:
                best, best_rank, best_term = host, rank, zone_term
        return best, best_term

    def min_key(self, request: PlacementRequest) -> int:
        """For PACK, the smallest key a host that fits can have: its bottleneck share is at least
        the request's smallest share (the same float operations keep the bound exact)."""
        if self.descending:
            return 0
        mv, mm, md = self._mult
        shares = [share for share, m in ((mv * request.vcpus, mv), (mm * request.memory_mb, mm),
                                         (md * request.disk_gb, md)) if m]
        return int(min(shares)) << HOST_BITS

    def weight(self, host: HostRecord, term: int) -> float:
        """The winning host's weight as a float (informational): score in [0, 1] plus terms."""
        return self.sign * (host.key >> HOST_BITS) / SCORE_UNIT + self.config.soft_affinity_weight * term

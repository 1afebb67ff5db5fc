"""Hundreds of concurrent claims at a nearly full inventory: no oversubscription, no broken
HARD anti-affinity, and every attempt accounted for."""

from __future__ import annotations

import random
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest

from vimkit.placement import (
    AffinityRule,
    AffinityScope,
    AffinityType,
    AffinityUnsatisfiable,
    Enforcement,
    HostSpec,
    NoValidHost,
    PlacementConfig,
    PlacementRequest,
    PlacementState,
    Strategy,
)

THREADS = 16
PER_THREAD = 40


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, to interleave claims densely."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def anti_rule(scope: str, enforcement: str, group_id: str) -> AffinityRule:
    return AffinityRule(AffinityType.ANTI_AFFINITY, AffinityScope(scope), Enforcement(enforcement), group_id=group_id)


def inventory() -> list[HostSpec]:
    return [
        HostSpec(f"z{z}-h{h}", f"z{z}", f"pop-{z % 2}", 8, 16384, 200, cpu_allocation_ratio=1.0)
        for z in range(4) for h in range(10)
    ]


@pytest.mark.parametrize("strategy", [Strategy.SPREAD, Strategy.PACK])
def test_concurrent_claims_never_oversubscribe_or_break_hard_anti_affinity(
    strategy: Strategy, tiny_switch_interval: None
) -> None:
    hosts = inventory()
    state = PlacementState(hosts, PlacementConfig(strategy=strategy))
    capacity = {h.host_id: h.capacity() for h in hosts}
    rng = random.Random(7)
    # Fill to about 85 % of the vCPUs first, so the concurrent wave fights over the remainder.
    prefill: list[str] = []
    while state.capacity().vcpus.allocated < 0.85 * state.capacity().vcpus.total:
        name = f"pre-{len(prefill)}"
        state.claim(name, PlacementRequest(rng.randint(1, 3), rng.randint(1, 4) * 1024, rng.randint(5, 30)))
        prefill.append(name)
    node_groups = [f"node-{i}" for i in range(30)]
    zone_groups = [f"zone-{i}" for i in range(6)]
    # A group has one policy (the VIM's affinity groups have one type, scope and enforcement);
    # a SOFT member joining a HARD group could legitimately share a host with a HARD member.
    soft_groups = [f"soft-{i}" for i in range(10)]

    def request_for(worker_rng: random.Random) -> PlacementRequest:
        rules: list[AffinityRule] = []
        roll = worker_rng.random()
        if roll < 0.5:
            rules.append(anti_rule("NFVI_NODE", "HARD", worker_rng.choice(node_groups)))
        elif roll < 0.6:
            rules.append(anti_rule("ZONE", "HARD", worker_rng.choice(zone_groups)))
        elif roll < 0.7:
            rules.append(anti_rule("NFVI_NODE", "SOFT", worker_rng.choice(soft_groups)))
        return PlacementRequest(worker_rng.randint(1, 2), worker_rng.randint(1, 2) * 1024, worker_rng.randint(1, 10),
                                affinity_rules=tuple(rules))

    barrier = threading.Barrier(THREADS)
    results: dict[str, str] = {}
    failures: dict[str, str] = {}
    unexpected: list[BaseException] = []
    released: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        worker_rng = random.Random(1000 + index)
        barrier.wait()
        for attempt in range(PER_THREAD):
            name = f"t{index}-{attempt}"
            try:
                claim = state.claim(name, request_for(worker_rng))
                with lock:
                    results[name] = claim.host_id
            except (NoValidHost, AffinityUnsatisfiable) as exc:
                with lock:
                    failures[name] = type(exc).__name__
            except BaseException as exc:  # noqa: BLE001 - reported below
                unexpected.append(exc)
            if attempt % 10 == 0 and index < 4:
                # Some threads also release prefilled resources while others claim.
                with lock:
                    victim = prefill.pop() if prefill else None
                if victim is not None:
                    assert state.release(victim) is not None
                    with lock:
                        released.append(victim)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert unexpected == []

    attempts = THREADS * PER_THREAD
    assert len(results) + len(failures) == attempts
    assert results and failures, "the wave must both succeed and run out of room"

    claims = {c.resource_id: c for c in state.claims()}
    assert set(results) <= set(claims)
    assert set(released).isdisjoint(claims)
    assert all(claims[name].host_id == host for name, host in results.items())

    used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for claim in claims.values():
        row = used[claim.host_id]
        row[0] += claim.vcpus
        row[1] += claim.memory_mb
        row[2] += claim.disk_gb
    for host_id, (vcpus, memory, disk) in used.items():
        cap = capacity[host_id]
        assert vcpus <= cap[0] and memory <= cap[1] and disk <= cap[2], f"{host_id} oversubscribed"

    for claim in claims.values():
        for rule in claim.request.affinity_rules:
            if not rule.hard:
                continue
            peers = [claims[m] for m in state.group_members(rule.group_id or "") if m != claim.resource_id]
            if rule.scope.value == "NFVI_NODE":
                assert all(p.host_id != claim.host_id for p in peers), f"{rule.group_id} shares a host"
            else:
                assert all(p.zone_id != claim.zone_id for p in peers), f"{rule.group_id} shares a zone"

    view = state.capacity()
    assert view.vcpus.allocated == sum(c.vcpus for c in claims.values())
    assert view.memory_mb.allocated == sum(c.memory_mb for c in claims.values())
    state.check_invariants()

    for name in list(claims):
        state.release(name)
    assert state.capacity().vcpus.allocated == 0
    state.check_invariants()

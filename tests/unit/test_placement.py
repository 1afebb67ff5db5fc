"""The placement engine: filters, weighers, affinity, exact capacity, resize, move and reload."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from vimkit.infra import default_inventory, parse_inventory
from vimkit.placement import (
    AffinityRule,
    AffinityUnsatisfiable,
    Claim,
    ClaimConflict,
    ClaimNotFound,
    HostSpec,
    MoveTarget,
    NoValidHost,
    PlacementConfig,
    PlacementRequest,
    PlacementState,
    Strategy,
    UnknownHost,
    UnknownZone,
)

SRIOV = "HW_NIC_SRIOV"


def spec(host_id: str, zone: str = "z1", vcpus: int = 8, memory: int = 16384, disk: int = 100,
         **extra: object) -> HostSpec:
    pop = extra.pop("pop", "pop-1")
    return HostSpec(host_id, zone, str(pop), vcpus, memory, disk, **extra)  # type: ignore[arg-type]


def req(vcpus: int = 1, memory: int = 1024, disk: int = 10, **extra: object) -> PlacementRequest:
    return PlacementRequest(vcpus, memory, disk, **extra)  # type: ignore[arg-type]


def anti(group: str | None = None, members: set[str] | None = None, scope: str = "NFVI_NODE",
         enforcement: str = "HARD") -> AffinityRule:
    return AffinityRule("ANTI_AFFINITY", scope, enforcement, frozenset(members or ()), group)  # type: ignore[arg-type]


def aff(group: str | None = None, members: set[str] | None = None, scope: str = "NFVI_NODE",
        enforcement: str = "HARD") -> AffinityRule:
    return AffinityRule("AFFINITY", scope, enforcement, frozenset(members or ()), group)  # type: ignore[arg-type]


def grid(zones: int = 2, per_zone: int = 4, **extra: object) -> PlacementState:
    config = extra.pop("config", None)
    hosts = [spec(f"z{z}-h{h}", f"z{z}", pop=f"pop-{z // 2}", **extra)  # type: ignore[arg-type]
             for z in range(zones) for h in range(per_zone)]
    return PlacementState(hosts, config)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- capacity and ratios


def test_allocation_ratios_and_reservations_set_what_fits() -> None:
    state = PlacementState([spec("h", vcpus=4, memory=10_000, disk=100, reserved_memory_mb=2_000,
                                 cpu_allocation_ratio=1.5, ram_allocation_ratio=1.25, disk_allocation_ratio=2.0)])
    view = state.capacity()
    assert (view.vcpus.total, view.memory_mb.total, view.disk_gb.total) == (6, 10_000, 200)
    for index in range(6):
        state.claim(f"c{index}", req(1, 1000, 20))
    with pytest.raises(NoValidHost):
        state.claim("c6", req(1, 1000, 20))
    assert state.capacity().vcpus.available == 0


def test_ratio_rounding_never_loses_a_unit() -> None:
    assert spec("h", vcpus=100, cpu_allocation_ratio=1.15).capacity()[0] == 115
    assert spec("h", vcpus=3, cpu_allocation_ratio=0.7).capacity()[0] == 2


def test_capacity_view_equals_what_claims_allow() -> None:
    state = grid(2, 3, vcpus=5, memory=4096, disk=10, cpu_allocation_ratio=1.6)
    state.claim("big", req(3, 1000, 1, host_id="z0-h0"))
    state.set_admin_state("z0-h1", "DISABLED")
    state.host_down("z1-h2")
    for zone in (None, "z0", "z1"):
        view = state.capacity(zone)
        expected = view.vcpus.available
        taken = 0
        zones = None if zone is None else {zone}
        names = []
        while True:
            try:
                names.append(state.claim(f"unit-{zone}-{taken}", req(1, 0, 0, zone_ids=zones)).resource_id)
            except NoValidHost:
                break
            taken += 1
        assert taken == expected
        assert state.capacity(zone).vcpus.available == 0
        for name in names:
            state.release(name)
    view = state.capacity()
    assert view.vcpus.total == 6 * 8
    assert view.vcpus.allocated == 3
    assert view.vcpus.unavailable == 2 * 8
    assert view.vcpus.total == view.vcpus.allocated + view.vcpus.available + view.vcpus.unavailable
    assert view.schedulable_hosts == 4 and view.hosts == 6
    assert view.vcpus.largest_available == 8


def test_release_gives_back_exactly_and_is_idempotent() -> None:
    state = grid(2, 4, vcpus=32, memory=65536)
    before = state.capacity()
    rng = random.Random(3)
    claims = [state.claim(f"r{i}", req(rng.randint(1, 3), rng.randint(1, 4) * 512, rng.randint(0, 20)))
              for i in range(40)]
    assert state.capacity().vcpus.allocated == sum(c.vcpus for c in claims)
    for claim in claims:
        assert state.release(claim.resource_id) == claim
        assert state.release(claim.resource_id) is None
    assert state.capacity() == before
    state.check_invariants()
    assert all(u.vcpus_used == 0 and u.resources == 0 for u in state.usage())


def test_duplicate_claim_is_refused() -> None:
    state = grid()
    state.claim("x", req())
    with pytest.raises(ClaimConflict):
        state.claim("x", req())


# ----------------------------------------------------------------------------- filters


def test_zone_host_architecture_and_trait_filters() -> None:
    hosts = [spec("a1", "za"), spec("a2", "za", traits=frozenset({SRIOV})), spec("b1", "zb", cpu_architecture="aarch64"),
             spec("b2", "zb")]
    state = PlacementState(hosts)
    assert state.claim("1", req(zone_ids={"zb"}, cpu_architecture="aarch64")).host_id == "b1"
    assert state.claim("2", req(required_traits={SRIOV})).host_id == "a2"
    assert state.claim("3", req(host_id="b2")).host_id == "b2"
    assert state.claim("4", req(zone_ids={"za"}, cpu_architecture="x86_64")).zone_id == "za"
    with pytest.raises(NoValidHost) as caught:
        state.claim("5", req(zone_ids={"zb"}, required_traits={SRIOV}))
    assert caught.value.eliminated == {"zone": 2, "traits": 2}
    assert "2 outside the requested or enabled zones" in caught.value.reason
    with pytest.raises(NoValidHost) as caught:
        state.claim("6", req(host_id="b1", cpu_architecture="x86_64"))
    assert caught.value.eliminated == {"hostId": 3, "cpuArchitecture": 1}
    with pytest.raises(UnknownHost):
        state.claim("7", req(host_id="nope"))


def test_admin_state_and_host_down_take_hosts_out_and_back() -> None:
    state = PlacementState([spec("h1"), spec("h2"), spec("h3")])
    state.set_admin_state("h1", "DISABLED")
    state.set_admin_state("h2", "MAINTENANCE")
    assert {state.claim(f"c{i}", req()).host_id for i in range(3)} == {"h3"}
    assert state.host_down("h3") == frozenset({"c0", "c1", "c2"})
    with pytest.raises(NoValidHost) as caught:
        state.claim("x", req())
    assert caught.value.eliminated == {"state": 3}
    assert "3 disabled, in maintenance or down" in str(caught.value)
    state.host_up("h3")
    state.set_admin_state("h1", "ENABLED")
    assert state.claim("y", req(host_id="h1")).host_id == "h1"
    with pytest.raises(ValueError):
        state.set_admin_state("h1", "OFF")
    usage = state.host_usage("h2")
    assert usage.admin_state == "MAINTENANCE" and not usage.schedulable and usage.up
    state.check_invariants()


def test_disabled_zone_takes_nothing() -> None:
    state = PlacementState([spec("a", "za"), spec("b", "zb", zone_enabled=False)])
    assert {state.claim(f"c{i}", req()).zone_id for i in range(4)} == {"za"}
    with pytest.raises(NoValidHost):
        state.claim("x", req(zone_ids={"zb"}))


def test_from_inventory_uses_ratios_reservations_and_states() -> None:
    inventory = parse_inventory({
        "zones": [{"zoneId": "z", "zoneName": "Z", "nfviPopId": "p"},
                  {"zoneId": "off", "zoneName": "Off", "nfviPopId": "p", "zoneState": "DISABLED"}],
        "hosts": [{"hostId": "h", "zoneId": "z", "vcpus": 10, "memoryMb": 8192, "diskGb": 100,
                   "reservedMemoryMb": 1024, "cpuAllocationRatio": 2.0, "adminState": "ENABLED"},
                  {"hostId": "m", "zoneId": "z", "vcpus": 10, "memoryMb": 8192, "diskGb": 100,
                   "adminState": "MAINTENANCE"},
                  {"hostId": "o", "zoneId": "off", "vcpus": 10, "memoryMb": 8192, "diskGb": 100}],
    })
    state = PlacementState.from_inventory(inventory)
    usage = {u.host_id: u for u in state.usage()}
    assert (usage["h"].vcpus_total, usage["h"].memory_mb_total) == (20, 7168)
    assert not usage["m"].schedulable and not usage["o"].schedulable
    assert state.capacity().schedulable_hosts == 1
    assert state.capacity("off").vcpus.unavailable == 40  # the default cpuAllocationRatio 4.0 on 10 vCPUs
    with pytest.raises(UnknownZone):
        state.capacity("nowhere")
    empty = parse_inventory({"zones": [{"zoneId": "z", "zoneName": "Z", "nfviPopId": "p"},
                                       {"zoneId": "new", "zoneName": "New", "nfviPopId": "p"}],
                             "hosts": [{"hostId": "h", "zoneId": "z", "vcpus": 1, "memoryMb": 1, "diskGb": 0}]})
    assert PlacementState.from_inventory(empty).capacity("new").hosts == 0


def test_default_inventory_places_sriov_requests_on_sriov_hosts() -> None:
    state = PlacementState.from_inventory(default_inventory())
    hosts = {state.claim(f"dp{i}", req(4, 8192, 40, required_traits={SRIOV})).host_id for i in range(8)}
    assert hosts == {"zone-a-host-01", "zone-a-host-02", "zone-b-host-01", "zone-b-host-02"}


# ----------------------------------------------------------------------------- weighers


def test_spread_uses_the_emptiest_host_and_pack_the_fullest_that_fits() -> None:
    hosts = [spec("small", vcpus=4, memory=8192, disk=100), spec("large", vcpus=16, memory=32768, disk=400)]
    spread = PlacementState(hosts, PlacementConfig(strategy=Strategy.SPREAD))
    pack = PlacementState(hosts, PlacementConfig(strategy="PACK"))  # type: ignore[arg-type]
    assert spread.claim("a", req(1, 1024, 10)).host_id == "large"
    assert pack.claim("a", req(1, 1024, 10)).host_id == "small"
    # PACK keeps filling the small host until the request no longer fits there.
    assert [pack.claim(f"p{i}", req(1, 2048, 10)).host_id for i in range(4)] == ["small"] * 3 + ["large"]
    # SPREAD alternates once free capacities cross.
    placed = Counter(spread.claim(f"s{i}", req(1, 1024, 10)).host_id for i in range(18))
    assert placed["large"] > placed["small"] > 0


def test_spread_balances_hosts_of_one_shape() -> None:
    state = grid(1, 5)
    counts = Counter(state.claim(f"c{i}", req()).host_id for i in range(25))
    assert set(counts.values()) == {5}


def test_pack_fills_hosts_one_after_another() -> None:
    state = grid(1, 4, config=PlacementConfig(strategy=Strategy.PACK))
    placed = [state.claim(f"c{i}", req(1, 2048, 10)).host_id for i in range(16)]
    assert len(set(placed[:8])) == 1 and len(set(placed[8:16])) == 1


def test_resource_weights_change_the_spread_order() -> None:
    hosts = [spec("cpu-rich", vcpus=32, memory=8192), spec("ram-rich", vcpus=4, memory=65536)]
    by_ram = PlacementState(hosts, PlacementConfig(cpu_weight=0.0, ram_weight=1.0, disk_weight=0.0))
    by_cpu = PlacementState(hosts, PlacementConfig(cpu_weight=1.0, ram_weight=0.0, disk_weight=0.0))
    assert by_ram.decide(req()).host_id == "ram-rich"
    assert by_cpu.decide(req()).host_id == "cpu-rich"
    with pytest.raises(ValueError):
        PlacementConfig(cpu_weight=0, ram_weight=0, disk_weight=0)


def test_decide_is_a_dry_run() -> None:
    state = grid()
    placement = state.decide(req())
    assert 0 < placement.weight <= 1
    assert state.capacity().vcpus.allocated == 0 and state.claims() == []
    assert state.claim("x", req()).host_id == placement.host_id


# ----------------------------------------------------------------------------- affinity


def test_hard_anti_affinity_by_group_then_unsatisfiable_not_no_capacity() -> None:
    state = grid(2, 3)
    hosts = [state.claim(f"m{i}", req(affinity_rules=(anti("g"),))).host_id for i in range(6)]
    assert len(set(hosts)) == 6
    assert state.group_members("g") == {f"m{i}" for i in range(6)}
    with pytest.raises(AffinityUnsatisfiable) as caught:
        state.claim("m6", req(affinity_rules=(anti("g"),)))
    assert caught.value.funnel.eliminated == {"affinity": 6}
    state.release("m2")
    assert state.claim("m6", req(affinity_rules=(anti("g"),))).host_id == hosts[2]


def test_full_hosts_give_no_capacity_even_with_affinity_rules() -> None:
    state = grid(1, 2, vcpus=1, cpu_allocation_ratio=1.0)
    state.claim("a", req(affinity_rules=(anti("g"),)))
    state.claim("b", req())
    with pytest.raises(NoValidHost) as caught:
        state.claim("c", req(affinity_rules=(anti("g"),)))
    assert caught.value.eliminated == {"affinity": 1, "capacity": 1}


def test_hard_anti_affinity_by_explicit_member_list() -> None:
    state = grid(1, 3)
    first = state.claim("a", req())
    second = state.claim("b", req(affinity_rules=(anti(members={"a", "not-placed"}),)))
    assert second.host_id != first.host_id
    third = state.claim("c", req(affinity_rules=(anti(members={"a", "b"}),)))
    assert third.host_id not in {first.host_id, second.host_id}
    assert state.group_members("anything") == frozenset()


def test_hard_affinity_follows_the_members_and_detects_contradictions() -> None:
    state = grid(2, 3)
    leader = state.claim("lead", req(affinity_rules=(aff("g"),)))
    for i in range(4):
        assert state.claim(f"f{i}", req(affinity_rules=(aff("g"),))).host_id == leader.host_id
    state.claim("elsewhere", req(host_id="z1-h0"))
    with pytest.raises(AffinityUnsatisfiable, match="different hosts"):
        state.claim("x", req(affinity_rules=(aff(members={"lead", "elsewhere"}),)))
    with pytest.raises(AffinityUnsatisfiable, match="contradicts"):
        state.claim("y", req(host_id="z1-h1", affinity_rules=(aff("g"),)))
    # The member host is full: nowhere else is allowed.
    crowded = PlacementState([spec("h1", vcpus=1, cpu_allocation_ratio=1.0), spec("h2")])
    crowded.claim("a", req(affinity_rules=(aff("g"),), host_id="h1"))
    with pytest.raises(AffinityUnsatisfiable):
        crowded.claim("b", req(affinity_rules=(aff("g"),)))


def test_zone_and_pop_scopes() -> None:
    state = grid(4, 2)  # zones z0..z3, pops: z0,z1 → pop-0; z2,z3 → pop-1
    zones = {state.claim(f"z{i}", req(affinity_rules=(anti("zones", scope="ZONE"),))).zone_id for i in range(4)}
    assert zones == {"z0", "z1", "z2", "z3"}
    with pytest.raises(AffinityUnsatisfiable):
        state.claim("z4", req(affinity_rules=(anti("zones", scope="ZONE"),)))
    first = state.claim("p0", req(affinity_rules=(anti("pops", scope="NFVI_POP"),)))
    second = state.claim("p1", req(affinity_rules=(anti("pops", scope="NFVI_POP"),)))
    assert {first.nfvi_pop_id, second.nfvi_pop_id} == {"pop-0", "pop-1"}
    with pytest.raises(AffinityUnsatisfiable):
        state.claim("p2", req(affinity_rules=(anti("pops", scope="NFVI_POP"),)))
    assert state.claim("anchor", req(zone_ids={"z2"})).zone_id == "z2"
    together = [state.claim(f"t{i}", req(affinity_rules=(aff(members={"anchor"}, scope="ZONE"),))) for i in range(3)]
    assert {c.zone_id for c in together} == {"z2"}
    near = [state.claim(f"n{i}", req(affinity_rules=(aff(members={"anchor"}, scope="NFVI_POP"),))) for i in range(4)]
    assert {c.zone_id for c in near} <= {"z2", "z3"} and {c.nfvi_pop_id for c in near} == {"pop-1"}


def test_soft_anti_affinity_spreads_when_possible_and_degrades_gracefully() -> None:
    state = grid(1, 3, config=PlacementConfig(strategy=Strategy.PACK))
    rule = (anti("s", enforcement="SOFT"),)
    hosts = [state.claim(f"s{i}", req(affinity_rules=rule)).host_id for i in range(3)]
    assert len(set(hosts)) == 3  # despite PACK, which alone would stack them
    more = Counter(state.claim(f"s{i}", req(affinity_rules=rule)).host_id for i in range(3, 9))
    assert set(more.values()) == {2}  # as many separate hosts as possible: 3 per host in the end


def test_soft_affinity_prefers_member_hosts_over_spread() -> None:
    state = grid(2, 3)
    rule = (aff("s", enforcement="SOFT"),)
    first = state.claim("a", req(affinity_rules=rule))
    assert all(state.claim(f"b{i}", req(affinity_rules=rule)).host_id == first.host_id for i in range(5))
    # When the member host is full, a soft rule does not fail the request.
    tight = PlacementState([spec("h1", vcpus=1, cpu_allocation_ratio=1.0), spec("h2")])
    tight.claim("x", req(affinity_rules=rule, host_id="h1"))
    assert tight.claim("y", req(affinity_rules=rule)).host_id == "h2"


def test_soft_zone_anti_affinity_and_small_soft_weight() -> None:
    state = grid(2, 2)
    rule = (anti("sz", scope="ZONE", enforcement="SOFT"),)
    zones = [state.claim(f"z{i}", req(affinity_rules=rule)).zone_id for i in range(2)]
    assert set(zones) == {"z0", "z1"}
    # With a tiny soft weight, resource balance wins over the soft rule.
    hosts = [spec("empty", vcpus=64, memory=131072, disk=1000), spec("busy", vcpus=64, memory=131072, disk=1000)]
    relaxed = PlacementState(hosts, PlacementConfig(soft_affinity_weight=0.0001))
    relaxed.claim("load", req(32, 65536, 500, host_id="busy"))
    relaxed.claim("m", req(affinity_rules=(anti("g", enforcement="SOFT"),), host_id="empty"))
    assert relaxed.claim("n", req(affinity_rules=(anti("g", enforcement="SOFT"),))).host_id == "empty"


# ----------------------------------------------------------------------------- resize and move


def test_resize_in_place_or_report() -> None:
    state = PlacementState([spec("h1", vcpus=4, cpu_allocation_ratio=1.0), spec("h2", vcpus=4, cpu_allocation_ratio=1.0)])
    state.claim("a", req(2, host_id="h1"))
    state.claim("b", req(1, host_id="h1"))
    grown = state.resize("a", req(3))
    assert (grown.host_id, grown.vcpus) == ("h1", 3)
    with pytest.raises(NoValidHost, match="migrate it to resize"):
        state.resize("a", req(4))
    assert state.resize("a", req(1, 512, 5)).vcpus == 1
    assert state.host_usage("h1").vcpus_used == 2
    with pytest.raises(NoValidHost, match="lacks traits"):
        state.resize("a", req(1, required_traits={SRIOV}))
    state.set_admin_state("h1", "MAINTENANCE")
    with pytest.raises(NoValidHost, match="takes no more resources"):
        state.resize("a", req(2))
    assert state.resize("a", req(1, 256, 1)).memory_mb == 256  # shrinking is always fine
    with pytest.raises(ClaimNotFound):
        state.resize("ghost", req())
    state.check_invariants()


def test_move_holds_the_source_until_confirmed() -> None:
    state = grid(2, 2)
    claim = state.claim("vm", req(2, 2048, 20, zone_ids={"z0"}))
    moved = state.move("vm", MoveTarget(zone_ids=frozenset({"z1"})))
    assert moved.zone_id == "z1" and moved.source is not None and moved.source.host_id == claim.host_id
    assert state.host_usage(claim.host_id).vcpus_used == 2 and state.host_usage(moved.host_id).vcpus_used == 2
    with pytest.raises(ClaimConflict):
        state.move("vm")
    with pytest.raises(ClaimConflict):
        state.resize("vm", req(1))
    confirmed = state.confirm_move("vm")
    assert confirmed.source is None and state.host_usage(claim.host_id).vcpus_used == 0
    with pytest.raises(ClaimConflict):
        state.confirm_move("vm")
    state.check_invariants()


def test_move_revert_and_release_during_move() -> None:
    state = grid(1, 3)
    claim = state.claim("vm", req(2, 2048, 20, affinity_rules=(anti("g"),)))
    other = state.claim("peer", req(affinity_rules=(anti("g"),)))
    moved = state.move("vm", request=req(3, 4096, 30, affinity_rules=(anti("g"),)))
    assert moved.host_id not in {claim.host_id, other.host_id}  # never the current host nor a peer's
    assert moved.vcpus == 3
    reverted = state.revert_move("vm")
    assert (reverted.host_id, reverted.vcpus, reverted.source) == (claim.host_id, 2, None)
    assert state.host_usage(moved.host_id).vcpus_used == 0
    assert state.group_members("g") == {"vm", "peer"}
    state.move("vm", MoveTarget(host_id=moved.host_id))
    state.release("vm")
    assert state.capacity().vcpus.allocated == 1
    with pytest.raises(NoValidHost, match="already on host"):
        state.move("peer", MoveTarget(host_id=other.host_id))
    state.check_invariants()


# ----------------------------------------------------------------------------- reload


def test_load_rebuilds_usage_groups_and_reports_problems() -> None:
    state = grid(2, 3)
    for i in range(5):
        state.claim(f"g{i}", req(2, 2048, 20, affinity_rules=(anti("grp"),)))
    state.claim("solo", req(1, 512, 1))
    state.move("solo")
    saved = [Claim.from_dict(c.to_dict()) for c in state.claims()]
    assert saved == state.claims()
    fresh = grid(2, 3)
    report = fresh.load(saved)
    assert report.loaded == 6 and report.unknown_host == () and report.overcommitted_hosts == ()
    assert fresh.usage() == state.usage()
    assert fresh.group_members("grp") == {f"g{i}" for i in range(5)}
    sixth = fresh.claim("g5", req(2, 2048, 20, affinity_rules=(anti("grp"),)))
    assert sixth.host_id not in {c.host_id for c in saved if c.resource_id.startswith("g")}
    fresh.check_invariants()
    with pytest.raises(ClaimConflict):
        fresh.load(saved[:1])

    smaller = PlacementState([spec("z0-h0", "z0", vcpus=1, cpu_allocation_ratio=1.0)])
    report = smaller.load(saved)
    assert set(report.unknown_host) == {c.resource_id for c in saved if c.host_id != "z0-h0"}
    if report.loaded:
        assert report.overcommitted_hosts == ("z0-h0",)


# ----------------------------------------------------------------------------- the index against brute force


def _reference(state: PlacementState, request: PlacementRequest) -> str | None:
    """Linear Nova-style filter + weigh over every host, for the same rules as the engine."""
    plan = state._plan(request, None)
    sign = 1 if state.config.strategy is Strategy.SPREAD else -1
    best: tuple[int, str] | None = None
    for host in state._hosts:
        if not host.schedulable or not host.zone_enabled:
            continue
        if request.zone_ids is not None and host.zone_id not in request.zone_ids:
            continue
        if request.cpu_architecture not in (None, host.arch) or not request.required_traits <= host.traits:
            continue
        if not plan.zone_ok(host.zone_id) or host.no in plan.excluded_nos:
            continue
        if plan.required_no is not None and host.no != plan.required_no:
            continue
        if request.host_id is not None and host.host_id != request.host_id:
            continue
        if host.free_v < request.vcpus or host.free_m < request.memory_mb or host.free_d < request.disk_gb:
            continue
        term = plan.host_terms.get(host.no, 0) + plan.zone_terms.get(host.zone_id, 0)
        rank = sign * host.key + state._searcher.soft_unit * term
        if best is None or rank > best[0]:
            best = (rank, host.host_id)
    return None if best is None else best[1]


@pytest.mark.parametrize("mixed", [True, False], ids=["many-buckets", "few-large-buckets"])
@pytest.mark.parametrize("strategy", [Strategy.SPREAD, Strategy.PACK])
def test_indexed_decisions_match_a_linear_scan(strategy: Strategy, mixed: bool) -> None:
    """Random claims, releases, pins and admin changes; every decision equals a linear scan's.
    "few-large-buckets" puts 400 hosts in two buckets, so index blocks split and merge."""
    rng = random.Random(11 if mixed else 12)
    shapes = [(8, 16384, 200), (16, 65536, 400), (32, 131072, 800)]
    zones = 5 if mixed else 2
    hosts = [
        spec(f"h{i}", f"z{i % zones}", *rng.choice(shapes), pop=f"p{i % zones // 3}",
             cpu_allocation_ratio=rng.choice([1.0, 2.0]),
             cpu_architecture=rng.choice(["x86_64", "x86_64", "aarch64"]) if mixed else "x86_64",
             traits=frozenset(rng.sample([SRIOV, "HW_NUMA_ROOT"], rng.randint(0, 2))) if mixed else frozenset())
        for i in range(400)
    ]
    state = PlacementState(hosts, PlacementConfig(strategy=strategy, soft_affinity_weight=rng.choice([0.05, 10.0])))
    live: list[str] = []
    for step in range(2500):
        roll = rng.random()
        if roll < 0.25 and live:
            state.release(live.pop(rng.randrange(len(live))))
            continue
        if roll < 0.27:
            host = rng.choice(hosts).host_id
            state.set_admin_state(host, rng.choice(["ENABLED", "ENABLED", "DISABLED"]))
            continue
        rules = []
        if rng.random() < 0.3:
            rules.append(AffinityRule(rng.choice(["AFFINITY", "ANTI_AFFINITY"]),  # type: ignore[arg-type]
                                      rng.choice(["NFVI_NODE", "ZONE", "NFVI_POP"]),  # type: ignore[arg-type]
                                      rng.choice(["HARD", "SOFT"]), group_id=f"g{rng.randrange(40)}"))  # type: ignore[arg-type]
        request = req(rng.randint(1, 16), rng.randint(1, 64) * 512, rng.randint(0, 200),
                      zone_ids=None if rng.random() < 0.6 else {f"z{rng.randrange(zones)}"},
                      host_id=None if rng.random() < 0.95 else rng.choice(hosts).host_id,
                      cpu_architecture=None if rng.random() < 0.8 else "aarch64",
                      required_traits=set() if rng.random() < 0.8 else {SRIOV}, affinity_rules=tuple(rules))
        try:
            expected = _reference(state, request)
        except AffinityUnsatisfiable:
            expected = None
        try:
            got: str | None = state.claim(f"r{step}", request).host_id
            live.append(f"r{step}")
        except (NoValidHost, AffinityUnsatisfiable):
            got = None
        assert got == expected, f"step {step}: {request}"
    state.check_invariants()
    assert len(live) > 100

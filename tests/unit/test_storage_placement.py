"""Storage placement: pools by type, zone, RDMA and multi-attach; ratios; affinity; moves; reload."""

from __future__ import annotations

import random
import threading

import pytest

from vimkit.infra import default_inventory
from vimkit.placement import (
    AffinityRule,
    AffinityUnsatisfiable,
    ClaimConflict,
    HostSpec,
    NoValidHost,
    PlacementRequest,
    PlacementState,
    StorageClaim,
    StoragePlacementState,
    StorageRequest,
    Strategy,
    UnknownZone,
)
from vimkit.placement.storage import PoolSpec


def pools(strategy: Strategy = Strategy.SPREAD, locator=None) -> StoragePlacementState:  # type: ignore[no-untyped-def]
    return StoragePlacementState([
        PoolSpec("a-ssd", "za", "pop-1", "volume", 1000, 1.0),
        PoolSpec("a-thin", "za", "pop-1", "volume", 1000, 2.5, multi_attach=True),
        PoolSpec("b-rdma", "zb", "pop-1", "volume", 500, 1.0, rdma_enabled=True),
        PoolSpec("c-obj", "zc", "pop-2", "object", 4000, 1.0),
    ], strategy, locator)


def anti(group: str | None = None, members: set[str] | None = None, scope: str = "NFVI_NODE",
         enforcement: str = "HARD") -> AffinityRule:
    return AffinityRule("ANTI_AFFINITY", scope, enforcement, frozenset(members or ()), group)  # type: ignore[arg-type]


def aff(group: str | None = None, members: set[str] | None = None, scope: str = "NFVI_NODE",
        enforcement: str = "HARD") -> AffinityRule:
    return AffinityRule("AFFINITY", scope, enforcement, frozenset(members or ()), group)  # type: ignore[arg-type]


def test_filters_type_zone_rdma_multi_attach_and_pinned_pool() -> None:
    state = pools()
    assert state.claim("o", StorageRequest(10, "object")).pool_id == "c-obj"
    assert state.claim("r", StorageRequest(10, rdma_enabled=True)).pool_id == "b-rdma"
    assert state.claim("m", StorageRequest(10, "volume", multi_attach=True)).pool_id == "a-thin"
    assert state.claim("z", StorageRequest(10, "volume", zone_ids={"za"}, pool_id="a-ssd")).pool_id == "a-ssd"
    with pytest.raises(NoValidHost) as caught:
        state.claim("x", StorageRequest(10, "object", rdma_enabled=True))
    assert caught.value.funnel.eliminated == {"typeOfStorage": 3, "rdmaEnabled": 1}
    assert "of 4 pools" in caught.value.reason


def test_allocation_ratio_and_capacity_match_claims() -> None:
    state = pools()
    view = state.capacity(type_of_storage="volume")
    assert (view.pools, view.total_gb) == (3, 1000 + 2500 + 500)
    total = 0
    while True:
        try:
            state.claim(f"v{total}", StorageRequest(100, "volume"))
        except NoValidHost:
            break
        total += 1
    assert total * 100 == view.available_gb
    assert state.capacity(type_of_storage="volume").available_gb == 0
    assert state.capacity("zc").available_gb == 4000
    with pytest.raises(UnknownZone):
        state.capacity("nowhere")


def test_spread_and_pack_choose_by_free_space() -> None:
    spread, pack = pools(), pools(Strategy.PACK)
    assert spread.claim("s", StorageRequest(10, "volume")).pool_id == "a-thin"  # 2500 GB free
    assert pack.claim("p", StorageRequest(10, "volume")).pool_id == "b-rdma"    # 500 GB, the tightest
    assert pack.claim("q", StorageRequest(600, "volume")).pool_id == "a-ssd"


def test_failed_pool_takes_no_new_volumes_and_extend_needs_room() -> None:
    state = pools()
    claim = state.claim("v", StorageRequest(100, "volume", pool_id="b-rdma"))
    assert state.pool_down("b-rdma") == {"v"}
    with pytest.raises(NoValidHost) as caught:
        state.claim("w", StorageRequest(10, rdma_enabled=True))
    assert caught.value.funnel.eliminated["state"] == 1
    with pytest.raises(NoValidHost, match="is down"):
        state.resize("v", 200)
    state.pool_up("b-rdma")
    assert state.resize("v", 500).size_gb == 500
    with pytest.raises(NoValidHost, match="0 GB free"):
        state.resize("v", 501)
    assert state.resize("v", 50).size_gb == 50
    assert state.capacity("zb").allocated_gb == 50 and claim.size_gb == 100


def test_volume_anti_affinity_by_pool_and_zone() -> None:
    state = pools()
    chosen = {state.claim(f"r{i}", StorageRequest(10, "volume", affinity_rules=(anti("rep"),))).pool_id
              for i in range(3)}
    assert chosen == {"a-ssd", "a-thin", "b-rdma"}
    with pytest.raises(AffinityUnsatisfiable):
        state.claim("r3", StorageRequest(10, "volume", affinity_rules=(anti("rep"),)))
    zones = {state.claim(f"z{i}", StorageRequest(10, "volume", affinity_rules=(anti("zz", scope="ZONE"),))).zone_id
             for i in range(2)}
    assert zones == {"za", "zb"}
    with pytest.raises(AffinityUnsatisfiable):
        state.claim("z2", StorageRequest(10, "volume", affinity_rules=(anti("zz", scope="ZONE"),)))
    # SOFT: falls back instead of failing, onto the pool with the fewest members.
    soft = state.claim("s", StorageRequest(10, "volume", affinity_rules=(anti("rep", enforcement="SOFT"),)))
    assert soft.pool_id in chosen


def test_affinity_with_computes_through_the_locator() -> None:
    computes = PlacementState([HostSpec("ha", "za", "pop-1", 8, 16384, 100), HostSpec("hb", "zb", "pop-1", 8, 16384, 100)])
    vm = computes.claim("vm", PlacementRequest(1, 1024, 10, zone_ids=frozenset({"zb"})))
    state = pools(locator=computes.locate)
    near = state.claim("near", StorageRequest(10, "volume", affinity_rules=(aff(members={"vm"}),)))
    assert near.zone_id == vm.zone_id == "zb"
    far = state.claim("far", StorageRequest(10, "volume", affinity_rules=(anti(members={"vm"}, scope="ZONE"),)))
    assert far.zone_id == "za"
    # NFVI_NODE anti-affinity with a compute is always met: pool volumes never live on its host.
    any_pool = state.claim("any", StorageRequest(10, "volume", pool_id="b-rdma",
                                                 affinity_rules=(anti(members={"vm"}),)))
    assert any_pool.pool_id == "b-rdma"
    same_pop = state.claim("pop", StorageRequest(10, affinity_rules=(aff(members={"vm"}, scope="NFVI_POP"),)))
    assert same_pop.nfvi_pop_id == "pop-1"
    assert state.locate("near") is not None and state.locate("near").host_id == "b-rdma"  # type: ignore[union-attr]


def test_move_confirm_revert_and_release() -> None:
    state = pools()
    original = state.claim("v", StorageRequest(100, "volume", zone_ids={"za"}, pool_id="a-ssd"))
    moved = state.move("v", zone_ids={"za", "zb"})
    assert moved.pool_id != "a-ssd" and moved.source_pool_id == "a-ssd"
    assert state.capacity("za").allocated_gb + state.capacity("zb").allocated_gb == 200
    with pytest.raises(ClaimConflict):
        state.move("v")
    reverted = state.revert_move("v")
    assert (reverted.pool_id, reverted.source_pool_id) == (original.pool_id, None)
    state.move("v", pool_id="a-thin")
    assert state.confirm_move("v").pool_id == "a-thin"
    assert state.capacity("za").allocated_gb == 100
    assert state.release("v") is not None and state.release("v") is None
    assert state.capacity().allocated_gb == 0


def test_load_round_trip_and_reports() -> None:
    state = pools()
    for i in range(5):
        state.claim(f"v{i}", StorageRequest(50 + i, "volume", affinity_rules=(anti("g", enforcement="SOFT"),)))
    state.move("v0", pool_id="b-rdma")
    saved = [StorageClaim.from_dict(c.to_dict()) for c in state.claims()]
    assert saved == state.claims()
    fresh = pools()
    report = fresh.load(saved)
    assert report.loaded == 5 and not report.unknown_host
    assert fresh.usage() == state.usage()
    partial = StoragePlacementState([PoolSpec("a-ssd", "za", "pop-1", "volume", 10)])
    report = partial.load(saved)
    assert set(report.unknown_host) == {c.resource_id for c in saved if c.pool_id != "a-ssd"}
    assert report.overcommitted_hosts == (("a-ssd",) if report.loaded else ())


def test_default_inventory_pools() -> None:
    state = StoragePlacementState.from_inventory(default_inventory())
    assert state.claim("r", StorageRequest(10, "volume", rdma_enabled=True)).pool_id == "pool-b"
    assert state.capacity().total_gb == 2 * 20480


def test_concurrent_volume_claims_never_overfill_a_pool() -> None:
    state = StoragePlacementState([PoolSpec(f"p{i}", f"z{i % 2}", "pop", "volume", 1000, 1.0) for i in range(4)])
    results: list[str] = []
    misses: list[str] = []
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        rng = random.Random(index)
        barrier.wait()
        for attempt in range(60):
            try:
                state.claim(f"w{index}-{attempt}", StorageRequest(rng.randint(5, 20), "volume"))
                results.append("ok")
            except NoValidHost:
                misses.append("full")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) + len(misses) == 480 and misses
    for usage in state.usage():
        assert usage.allocated_gb <= usage.capacity_gb
    assert state.capacity().allocated_gb == sum(c.size_gb for c in state.claims())

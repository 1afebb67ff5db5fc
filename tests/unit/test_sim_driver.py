"""The simulated driver: timing, deterministic workload, counters, faults and their events,
injected failures and persistence across a restart."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vimkit.drivers import (
    ComputeResources,
    ComputeSpec,
    Driver,
    DriverError,
    DriverErrorCode,
    DriverEvent,
    EventHub,
    EventKind,
    FaultInjector,
    FaultKind,
    FixedIp,
    LinkState,
    MetricName,
    MetricSample,
    NetworkSpec,
    NicSpec,
    ObjectType,
    PortSpec,
    RunningState,
    Segmentation,
    SubnetSpec,
    VolumeAttachmentSpec,
    VolumeSpec,
    VolumeState,
)
from vimkit.drivers.sim import STATE_FILE, LatencySpec, SimConfig, SimDriver, core, state

T = TypeVar("T")
HOST = "zone-a-host-01"
OTHER_HOST = "zone-a-host-02"


class Clock:
    """A hand-driven clock: samples depend on time, so determinism needs a controlled one."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


def make(tmp_path: Path | None = None, seed: int = 1, clock: Clock | None = None, **config: Any) -> SimDriver:
    return SimDriver(config=SimConfig(seed=seed, latency_scale=config.pop("latency_scale", 0.0),
                                      state_dir=tmp_path, **config), clock=clock or Clock())


async def drain(events: AsyncIterator[DriverEvent]) -> list[DriverEvent]:
    """Everything published so far (publishing is synchronous, so a short wait is enough)."""
    found = []
    while True:
        try:
            found.append(await asyncio.wait_for(events.__anext__(), 0.01))
        except (TimeoutError, StopAsyncIteration):
            return found


async def boot(driver: SimDriver, compute_id: str = "vm1", host: str = HOST, ports: int = 1,
               volume: bool = False) -> None:
    """A network, a subnet, ``ports`` ports and a compute using them (and a volume at boot)."""
    if "net" not in driver._state.networks:
        await driver.create_network(NetworkSpec("net", "net", Segmentation("vxlan", 10001, None, 1450)))
        await driver.create_subnet(SubnetSpec("sub", "net", "10.0.0.0/24"))
    nics = []
    for index in range(ports):
        port_id = f"{compute_id}-p{index}"
        number = len(driver._state.ports) + 10
        mac = f"fa:16:3e:00:00:{number:02x}"
        await driver.create_port(PortSpec(port_id, "net", mac, (FixedIp("sub", f"10.0.0.{number}"),)))
        nics.append(NicSpec(port_id, "net", mac))
    volumes: tuple[VolumeAttachmentSpec, ...] = ()
    if volume:
        await driver.create_volume(VolumeSpec(f"{compute_id}-vol", "data", 10, "pool-a", "zone-a"))
        volumes = (VolumeAttachmentSpec(f"{compute_id}-vol"),)
    await driver.create_compute(ComputeSpec(compute_id, compute_id, host, "zone-a", 2, 4096, 20,
                                            nics=tuple(nics), volumes=volumes))


def values(samples: list[MetricSample], metric: MetricName, object_id: str = "vm1",
           sub: str | None = None) -> list[float]:
    return [s.value for s in samples if s.metric is metric and s.object_id == object_id
            and (sub is None or s.sub_object_id == sub)]


# ----------------------------------------------------------------------------- protocol and timing


def test_sim_driver_implements_the_protocols() -> None:
    driver = make()
    assert isinstance(driver, Driver) and isinstance(driver, FaultInjector)
    capabilities = driver.capabilities()
    assert capabilities.fault_injection and not capabilities.persistent
    assert capabilities.metrics == frozenset(MetricName)
    assert make(Path("/nonexistent-never-written")).capabilities().persistent


def test_lognormal_latency_matches_its_median_and_p99() -> None:
    spec = LatencySpec(median_ms=5.0, p99_ms=40.0)
    rng = random.Random(42)
    draws = sorted(spec.sample(rng) * 1000 for _ in range(40_000))
    assert statistics.median(draws) == pytest.approx(5.0, rel=0.05)
    assert draws[int(len(draws) * 0.99)] == pytest.approx(40.0, rel=0.1)
    assert LatencySpec(3.0, 3.0).sample(rng) == 0.003
    assert LatencySpec(0.0, 0.0).sample(rng) == 0.0
    assert spec.sample(rng, scale=0.0) == 0.0
    with pytest.raises(ValueError):
        LatencySpec(-1.0, 2.0)


def test_operations_wait_their_configured_latency() -> None:
    async def scenario() -> tuple[float, float, float]:
        driver = SimDriver(config=SimConfig(latencies={"create_network": LatencySpec(60.0, 60.0)},
                                            default_latency=LatencySpec(0.0, 0.0)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await driver.create_network(NetworkSpec("n", "n", Segmentation("vlan", 100, "physnet1")))
        slow = loop.time() - started
        started = loop.time()
        await driver.create_subnet(SubnetSpec("s", "n", "10.1.0.0/24"))
        fast = loop.time() - started
        halved = SimDriver(config=SimConfig(latencies={"create_network": LatencySpec(60.0, 60.0)}, latency_scale=0.5))
        started = loop.time()
        await halved.create_network(NetworkSpec("n", "n", Segmentation("vlan", 100, "physnet1")))
        return slow, fast, loop.time() - started

    slow, fast, halved = run(scenario)
    # Sleeps never end early; upper bounds are loose because a loaded machine delays wake-ups.
    assert slow >= 0.059 and halved >= 0.029 and fast < 0.03
    assert fast < halved < slow
    assert SimConfig().latency("create_compute").median_ms > SimConfig().latency("plug_port").median_ms


# ----------------------------------------------------------------------------- workload and counters


def scripted_samples(seed: int) -> list[tuple[str, str, str | None, float, int]]:
    async def scenario() -> list[tuple[str, str, str | None, float, int]]:
        clock = Clock()
        driver = make(seed=seed, clock=clock)
        await boot(driver, "vm1", ports=2)
        await boot(driver, "vm2", OTHER_HOST, volume=True)
        out = []
        for step in range(12):
            clock.advance(10)
            if step == 5:
                await driver.reboot_compute("vm1")
            out += [(s.object_id, s.metric.value, s.sub_object_id, s.value, s.epoch) for s in await driver.sample_metrics()]
        return out

    return run(scenario)


def test_samples_are_deterministic_under_a_seed() -> None:
    first, second, other = scripted_samples(7), scripted_samples(7), scripted_samples(8)
    assert first == second
    assert first != other
    assert {metric for _o, metric, *_ in first} == {m.value for m in MetricName}


def test_samples_are_plausible() -> None:
    samples = scripted_samples(3)
    for object_id, metric, _sub, value, _epoch in samples:
        if metric.endswith("utilisation"):
            assert 0.0 <= value <= 100.0, (object_id, metric, value)
        else:
            assert value >= 0 and value == int(value)
    cpu = [v for o, m, _s, v, _e in samples if o == "vm1" and m == "cpu.utilisation"]
    assert len(set(cpu)) > 5  # it moves


def test_counters_grow_monotonically_and_reset_on_reboot_and_migration() -> None:
    async def scenario() -> None:
        clock = Clock()
        driver = make(clock=clock)
        await boot(driver, "vm1", ports=2)
        history: list[list[MetricSample]] = []
        for _ in range(5):
            clock.advance(30)
            history.append(await driver.sample_metrics())
        for metric in (MetricName.NET_RX_BYTES, MetricName.NET_TX_BYTES, MetricName.NET_RX_PACKETS,
                       MetricName.NET_TX_PACKETS):
            for port in ("vm1-p0", "vm1-p1"):
                series = [values(s, metric, sub=port)[0] for s in history]
                assert series == sorted(series) and series[-1] > series[0] > 0, (metric, port, series)
        before = values(history[-1], MetricName.NET_RX_BYTES, sub="vm1-p0")[0]
        info = await driver.reboot_compute("vm1")
        assert info.details["epoch"] == 1
        clock.advance(30)
        after = await driver.sample_metrics()
        rx = [s for s in after if s.metric is MetricName.NET_RX_BYTES and s.sub_object_id == "vm1-p0"][0]
        assert rx.epoch == 1 and rx.value < before
        await driver.migrate_compute("vm1", OTHER_HOST)
        clock.advance(1)
        migrated = await driver.sample_metrics()
        rx = [s for s in migrated if s.metric is MetricName.NET_RX_BYTES and s.sub_object_id == "vm1-p0"][0]
        assert rx.epoch == 2 and rx.value < 30 * 10_000_000
        # Paused: CPU 0 and no traffic; resumed from suspend: a new epoch.
        await driver.pause_compute("vm1")
        frozen = values(await driver.sample_metrics(), MetricName.NET_TX_BYTES, sub="vm1-p1")
        clock.advance(60)
        paused = await driver.sample_metrics()
        assert values(paused, MetricName.CPU_UTILISATION) == [0.0]
        assert values(paused, MetricName.NET_TX_BYTES, sub="vm1-p1") == frozen
        await driver.suspend_compute("vm1")
        assert values(await driver.sample_metrics(), MetricName.CPU_UTILISATION) == []
        assert (await driver.resume_compute("vm1")).details["epoch"] == 3

    run(scenario)


def test_volumes_report_usage_that_grows_while_attached_to_a_running_compute() -> None:
    async def scenario() -> None:
        clock = Clock()
        driver = make(clock=clock)
        await boot(driver, "vm1", volume=True)
        await driver.create_volume(VolumeSpec("idle", "idle", 10, "pool-a", "zone-a"))
        series: dict[str, list[float]] = {"vm1-vol": [], "idle": []}
        for _ in range(4):
            clock.advance(3600)
            for sample in await driver.sample_metrics():
                if sample.metric is MetricName.STORAGE_UTILISATION:
                    assert sample.object_type is ObjectType.STORAGE
                    series[sample.object_id].append(sample.value)
        assert series["vm1-vol"] == sorted(series["vm1-vol"]) and series["vm1-vol"][-1] > series["vm1-vol"][0]
        assert len(set(series["idle"])) == 1

    run(scenario)


# ----------------------------------------------------------------------------- state machine and objects


def test_running_state_machine_refuses_what_a_guest_cannot_do() -> None:
    async def scenario() -> None:
        driver = make()
        await boot(driver)
        stopped = await driver.stop_compute("vm1")
        assert stopped.running_state is RunningState.STOPPED
        for call in (driver.pause_compute, driver.suspend_compute, driver.unpause_compute, driver.reboot_compute):
            with pytest.raises(DriverError) as caught:
                await call("vm1")
            assert caught.value.code is DriverErrorCode.CONFLICT and not caught.value.retryable
        assert (await driver.start_compute("vm1")).running_state is RunningState.RUNNING
        resized = await driver.resize_compute("vm1", ComputeResources(4, 8192, 40))
        assert (resized.vcpus, resized.memory_mb, resized.details["epoch"]) == (4, 8192, 2)
        with pytest.raises(DriverError, match="cannot shrink"):
            await driver.resize_compute("vm1", ComputeResources(4, 8192, 10))
        with pytest.raises(DriverError) as caught:
            await driver.get_compute("ghost")
        assert caught.value.code is DriverErrorCode.NOT_FOUND
        snapshot = await driver.snapshot_compute("vm1", "snap1")
        assert snapshot.source_id == "vm1" and isinstance(snapshot.created_at, datetime)
        await driver.delete_compute_snapshot("snap1")

    run(scenario)


def test_ports_and_volumes_plug_attach_and_guard_deletion() -> None:
    async def scenario() -> None:
        driver = make()
        await boot(driver, volume=True)
        await driver.create_port(PortSpec("extra", "net", "fa:16:3e:aa:bb:cc"))
        with pytest.raises(DriverError, match="MAC"):
            await driver.create_port(PortSpec("dup", "net", "FA:16:3E:AA:BB:CC"))
        nic = await driver.plug_port("extra", "vm1")
        assert nic.device == "eth1" and nic.link is LinkState.UP
        with pytest.raises(DriverError) as caught:
            await driver.delete_port("extra")
        assert caught.value.code is DriverErrorCode.CONFLICT
        with pytest.raises(DriverError):
            await driver.delete_network("net")
        await driver.create_volume(VolumeSpec("v2", "v2", 5, "pool-a", "zone-a", multi_attach=True))
        attachment = await driver.attach_volume("v2", "vm1")
        assert attachment.device == "/dev/vdc"
        with pytest.raises(DriverError):
            await driver.delete_volume("v2")
        extended = await driver.extend_volume("v2", 8)
        assert extended.size_gb == 8 and extended.state is VolumeState.IN_USE
        with pytest.raises(DriverError, match="only grow"):
            await driver.extend_volume("v2", 4)
        await driver.snapshot_volume("v2", "vs")
        await driver.detach_volume("v2", "vm1")
        with pytest.raises(DriverError, match="snapshots"):
            await driver.delete_volume("v2")
        await driver.delete_volume_snapshot("vs")
        await driver.delete_volume("v2")
        await driver.unplug_port("extra", "vm1")
        await driver.delete_port("extra")
        await driver.delete_compute("vm1")
        assert all(p.compute_id is None for p in await driver.list_ports())
        assert (await driver.list_volumes())[0].state is VolumeState.AVAILABLE
        for port in await driver.list_ports():
            await driver.delete_port(port.port_id)
        await driver.delete_network("net")
        assert await driver.list_computes() == []

    run(scenario)


# ----------------------------------------------------------------------------- faults and events


def test_host_down_crashes_its_computes_with_correlated_events() -> None:
    async def scenario() -> None:
        driver = make()
        events = driver.events()
        await boot(driver, "vm1")
        await boot(driver, "vm2")
        await driver.stop_compute("vm2")
        await boot(driver, "vm3", OTHER_HOST)
        assert await drain(events) == []  # requested changes are not events
        fault_id = await driver.inject(FaultKind.HOST_DOWN, HOST)
        seen = await drain(events)
        assert [e.kind for e in seen] == [EventKind.HOST_DOWN, EventKind.COMPUTE_CRASHED]
        root, crashed = seen
        assert root.object_type is ObjectType.HOST and root.object_id == HOST and root.fault_id == fault_id
        assert crashed.object_id == "vm1" and crashed.cause_event_id == root.event_id
        assert (await driver.get_compute("vm1")).running_state is RunningState.CRASHED
        assert (await driver.get_compute("vm2")).running_state is RunningState.STOPPED
        assert not [h for h in await driver.list_hosts() if h.host_id == HOST][0].up
        with pytest.raises(DriverError) as caught:
            await driver.start_compute("vm2")
        assert caught.value.code is DriverErrorCode.HOST_UNAVAILABLE and caught.value.retryable
        with pytest.raises(DriverError) as caught:
            await driver.create_compute(ComputeSpec("new", "new", HOST, "zone-a", 1, 512, 1))
        assert caught.value.code is DriverErrorCode.HOST_UNAVAILABLE
        assert {s.object_id for s in await driver.sample_metrics()} == {"vm3"}
        await driver.repair(fault_id)
        assert [e.kind for e in await drain(events)] == [EventKind.HOST_UP]
        assert (await driver.get_compute("vm1")).running_state is RunningState.CRASHED  # stays, like a real VM
        assert (await driver.start_compute("vm1")).running_state is RunningState.RUNNING
        assert driver.faults() == []
        with pytest.raises(DriverError):
            await driver.repair(fault_id)

    run(scenario)


def test_compute_crash_and_its_repair() -> None:
    async def scenario() -> None:
        driver = make()
        await boot(driver)
        events = driver.events()
        fault_id = await driver.inject("COMPUTE_CRASH", "vm1", {"reason": "kernel panic"})
        (event,) = await drain(events)
        assert event.kind is EventKind.COMPUTE_CRASHED and event.details["reason"] == "kernel panic"
        assert driver.faults()[0].kind is FaultKind.COMPUTE_CRASH
        await driver.repair(fault_id)
        (event,) = await drain(events)
        assert event.kind is EventKind.COMPUTE_STATE and event.details["runningState"] == "RUNNING"
        info = await driver.get_compute("vm1")
        assert info.running_state is RunningState.RUNNING and info.details["epoch"] == 1

    run(scenario)


def test_storage_failure_of_a_pool_fails_its_volumes() -> None:
    async def scenario() -> None:
        driver = make()
        await boot(driver, volume=True)
        await driver.create_volume(VolumeSpec("spare", "spare", 5, "pool-a", "zone-a"))
        await driver.create_volume(VolumeSpec("elsewhere", "e", 5, "pool-b", "zone-b"))
        events = driver.events()
        fault_id = await driver.inject(FaultKind.STORAGE_FAILURE, "pool-a")
        seen = await drain(events)
        assert seen[0].object_type is ObjectType.STORAGE_POOL and seen[0].kind is EventKind.VOLUME_FAILED
        failed = {e.object_id for e in seen[1:]}
        assert failed == {"vm1-vol", "spare"} and all(e.cause_event_id == seen[0].event_id for e in seen[1:])
        states = {v.volume_id: v.state for v in await driver.list_volumes()}
        assert states == {"vm1-vol": VolumeState.FAILED, "spare": VolumeState.FAILED, "elsewhere": VolumeState.AVAILABLE}
        for call in (driver.attach_volume("spare", "vm1"), driver.extend_volume("spare", 9),
                     driver.create_volume(VolumeSpec("new", "n", 1, "pool-a", "zone-a"))):
            with pytest.raises(DriverError) as caught:
                await call
            assert caught.value.code is DriverErrorCode.BACKEND_UNAVAILABLE and caught.value.retryable
        assert "spare" not in {s.object_id for s in await driver.sample_metrics()}
        await driver.repair(fault_id)
        recovered = await drain(events)
        assert {e.object_id for e in recovered if e.object_type is ObjectType.STORAGE} == {"vm1-vol", "spare"}
        assert {v.state for v in await driver.list_volumes()} == {VolumeState.IN_USE, VolumeState.AVAILABLE}
        single = await driver.inject(FaultKind.STORAGE_FAILURE, "elsewhere")
        (event,) = await drain(events)
        assert event.object_id == "elsewhere" and event.kind is EventKind.VOLUME_FAILED
        await driver.repair(single)

    run(scenario)


def test_link_down_on_a_network_stops_its_ports_counters() -> None:
    async def scenario() -> None:
        clock = Clock()
        driver = make(clock=clock)
        await boot(driver, ports=2)
        clock.advance(10)
        await driver.sample_metrics()
        events = driver.events()
        fault_id = await driver.inject(FaultKind.NETWORK_LINK_DOWN, "net")
        seen = await drain(events)
        assert seen[0].object_type is ObjectType.NETWORK and seen[0].kind is EventKind.LINK_DOWN
        assert {e.object_id for e in seen[1:]} == {"vm1-p0", "vm1-p1"}
        assert {n.link for n in (await driver.get_compute("vm1")).nics} == {LinkState.DOWN}
        before = values(await driver.sample_metrics(), MetricName.NET_RX_BYTES, sub="vm1-p0")
        clock.advance(60)
        assert values(await driver.sample_metrics(), MetricName.NET_RX_BYTES, sub="vm1-p0") == before
        await driver.repair(fault_id)
        assert {e.kind for e in await drain(events)} == {EventKind.LINK_UP}
        clock.advance(60)
        assert values(await driver.sample_metrics(), MetricName.NET_RX_BYTES, sub="vm1-p0")[0] > before[0]
        # A host's uplink takes down the ports of the computes on it only.
        await boot(driver, "vm2", OTHER_HOST)
        host_fault = await driver.inject(FaultKind.NETWORK_LINK_DOWN, HOST)
        assert {e.object_id for e in await drain(events)} == {HOST, "vm1-p0", "vm1-p1"}
        assert {p.port_id for p in await driver.list_ports() if p.link is LinkState.DOWN} == {"vm1-p0", "vm1-p1"}
        await driver.repair(host_fault)

    run(scenario)


def test_cpu_load_raises_cpu_samples_until_repaired() -> None:
    async def scenario() -> None:
        clock = Clock()
        driver = make(clock=clock)
        await boot(driver)
        fault_id = await driver.inject(FaultKind.CPU_LOAD, HOST, {"load": 97})
        loaded = []
        for _ in range(5):
            clock.advance(5)
            loaded += values(await driver.sample_metrics(), MetricName.CPU_UTILISATION)
        assert min(loaded) > 90
        await driver.repair(fault_id)
        normal = []
        for _ in range(5):
            clock.advance(5)
            normal += values(await driver.sample_metrics(), MetricName.CPU_UTILISATION)
        assert max(normal) < 90
        with pytest.raises(DriverError):
            await driver.inject(FaultKind.CPU_LOAD, "vm1", {"load": 150})

    run(scenario)


def test_fault_targets_are_checked() -> None:
    async def scenario() -> None:
        driver = make()
        for kind in FaultKind:
            with pytest.raises(DriverError) as caught:
                await driver.inject(kind, "no-such-thing")
            assert caught.value.code is DriverErrorCode.NOT_FOUND
        with pytest.raises(ValueError):
            await driver.inject("METEOR_STRIKE", HOST)

    run(scenario)


def test_event_subscribers_are_independent_and_a_laggard_gets_resync() -> None:
    async def scenario() -> None:
        hub = EventHub(max_queue=3)
        fast, slow = hub.subscribe(), hub.subscribe()
        now = datetime.now().astimezone()
        for index in range(5):
            hub.publish(DriverEvent(f"e{index}", EventKind.HOST_UP, ObjectType.HOST, "h", now))
            if index < 4:
                assert (await fast.__anext__()).event_id == f"e{index}"
        assert (await fast.__anext__()).event_id == "e4"
        lagged = await drain(slow)
        assert [e.kind for e in lagged] == [EventKind.RESYNC, EventKind.HOST_UP]
        assert hub.subscribers == 2
        hub.close()
        assert await drain(fast) == [] and await drain(hub.subscribe()) == []

    run(scenario)


# ----------------------------------------------------------------------------- injected failures


def test_fail_next_targets_an_operation_and_a_host() -> None:
    async def scenario() -> None:
        driver = make()
        driver.fail_next("create_compute", target_id=HOST, code=DriverErrorCode.NO_CAPACITY, retryable=True)
        with pytest.raises(DriverError) as caught:
            await driver.create_compute(ComputeSpec("a", "a", HOST, "zone-a", 1, 512, 1))
        assert caught.value.code is DriverErrorCode.NO_CAPACITY and caught.value.retryable
        assert await driver.list_computes() == []  # nothing was created
        await driver.create_compute(ComputeSpec("a", "a", HOST, "zone-a", 1, 512, 1))
        driver.fail_next("attach_volume", count=2, message="boom")
        await driver.create_volume(VolumeSpec("v", "v", 1, "pool-a", "zone-a"))
        for _ in range(2):
            with pytest.raises(DriverError, match="boom"):
                await driver.attach_volume("v", "a")
        assert (await driver.attach_volume("v", "a")).compute_id == "a"
        driver.fail_next("plug_port", target_id="other-compute")
        await driver.create_network(NetworkSpec("n", "n", Segmentation("flat", None, "external")))
        await driver.create_port(PortSpec("p", "n", "fa:16:3e:00:00:99"))
        await driver.plug_port("p", "a")  # the failure waits for another target
        driver.clear_failures()
        with pytest.raises(ValueError):
            driver.fail_next("no_such_operation")

    run(scenario)


# ----------------------------------------------------------------------------- persistence


def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()

    async def before() -> tuple[list[float], str]:
        driver = make(tmp_path, clock=clock)
        await boot(driver, "vm1", ports=2, volume=True)
        await boot(driver, "vm2", OTHER_HOST)
        await driver.reboot_compute("vm2")
        clock.advance(60)
        samples = await driver.sample_metrics()
        fault_id = await driver.inject(FaultKind.HOST_DOWN, OTHER_HOST)
        await driver.close()
        return values(samples, MetricName.NET_TX_BYTES), fault_id

    counters, fault_id = run(before)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [STATE_FILE]  # the temporary file was renamed into place
    assert json.loads((tmp_path / STATE_FILE).read_text())["version"] == 1

    async def after() -> None:
        driver = make(tmp_path, clock=clock)
        computes = {c.compute_id: c for c in await driver.list_computes()}
        assert set(computes) == {"vm1", "vm2"}
        assert computes["vm2"].running_state is RunningState.CRASHED and computes["vm2"].details["epoch"] == 1
        assert [a.device for a in computes["vm1"].attachments] == ["/dev/vdb"]
        assert [f.fault_id for f in driver.faults()] == [fault_id]
        assert not [h for h in await driver.list_hosts() if h.host_id == OTHER_HOST][0].up
        assert {v.volume_id for v in await driver.list_volumes()} == {"vm1-vol"}
        clock.advance(60)
        resumed = values(await driver.sample_metrics(), MetricName.NET_TX_BYTES)
        assert len(resumed) == 2 and all(now > then for now, then in zip(resumed, counters))
        await driver.repair(fault_id)
        await driver.close()

    run(after)
    assert run(lambda: make(tmp_path, clock=clock).list_hosts()) and make(tmp_path).faults() == []


def test_state_is_written_soon_off_the_loop_and_at_close(tmp_path: Path) -> None:
    """A change reaches the file within the save interval without a close (a killed process
    loses at most that window); the write itself runs in a worker thread, and close waits for
    it before writing the final state, so an older write never lands last."""
    def saved() -> set[str]:
        path = tmp_path / STATE_FILE
        return set(json.loads(path.read_text())["computes"]) if path.exists() else set()

    async def scenario() -> None:
        driver = make(tmp_path, save_interval=0.01)
        writers: list[str] = []
        real_write = core.write_state

        def write_state(*args: Any, **kwargs: Any) -> None:
            writers.append(threading.current_thread().name)
            real_write(*args, **kwargs)

        core.write_state = write_state  # type: ignore[attr-defined]
        try:
            await boot(driver, "vm1")
            for _ in range(300):
                await asyncio.sleep(0.01)
                if saved() == {"vm1"}:
                    break
            assert saved() == {"vm1"}
            assert writers and threading.main_thread().name not in writers
            await boot(driver, "vm2", OTHER_HOST)
            await driver.close()
            assert saved() == {"vm1", "vm2"}
        finally:
            core.write_state = real_write  # type: ignore[attr-defined]

    run(scenario)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_each_operation_saves_what_it_changed(tmp_path: Path) -> None:
    """The state file is written from each record's kept JSON, encoded again only for the records
    an operation names as changed: after every operation the file must equal an encoding of the
    whole state. A record an operation changed without naming it fails here."""
    clock = Clock()

    async def scenario() -> None:
        driver = make(tmp_path, clock=clock)

        def check(step: str) -> None:
            driver._dirty = True
            driver._flush()
            saved = json.loads((tmp_path / STATE_FILE).read_bytes())
            whole = json.loads(state.encode_state(driver._state.to_document(driver.config.seed)))
            assert saved == whole, f"after {step}"

        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("boot vm1", lambda: boot(driver, "vm1", ports=2, volume=True)),
            ("boot vm2", lambda: boot(driver, "vm2", OTHER_HOST)),
            ("boot vm3", lambda: boot(driver, "vm3")),
            ("create port", lambda: driver.create_port(PortSpec("extra", "net", "fa:16:3e:aa:bb:cc"))),
            ("plug", lambda: driver.plug_port("extra", "vm2")),
            ("volume", lambda: driver.create_volume(VolumeSpec("v2", "v2", 5, "pool-a", "zone-a", multi_attach=True))),
            ("attach", lambda: driver.attach_volume("v2", "vm2")),
            ("attach again", lambda: driver.attach_volume("v2", "vm1")),
            ("extend", lambda: driver.extend_volume("v2", 8)),
            ("volume snapshot", lambda: driver.snapshot_volume("v2", "vs")),
            ("tick", lambda: clock_then(driver.sample_metrics)),
            ("column tick", lambda: clock_then(driver.sample_metrics_columns)),
            ("draws", lambda: asyncio.sleep(0.05)),
            ("stop", lambda: driver.stop_compute("vm3")),
            ("start", lambda: driver.start_compute("vm3")),
            ("pause", lambda: driver.pause_compute("vm3")),
            ("unpause", lambda: driver.unpause_compute("vm3")),
            ("reboot", lambda: driver.reboot_compute("vm1")),
            ("resize", lambda: driver.resize_compute("vm3", ComputeResources(4, 8192, 40))),
            ("migrate", lambda: driver.migrate_compute("vm3", OTHER_HOST)),
            ("compute snapshot", lambda: driver.snapshot_compute("vm3", "cs")),
            ("delete compute snapshot", lambda: driver.delete_compute_snapshot("cs")),
            ("host down", lambda: driver.inject(FaultKind.HOST_DOWN, OTHER_HOST)),
            ("crash", lambda: driver.inject(FaultKind.COMPUTE_CRASH, "vm1")),
            ("link down", lambda: driver.inject(FaultKind.NETWORK_LINK_DOWN, "net")),
            ("repairs", lambda: repair_all(driver)),
            ("detach", lambda: driver.detach_volume("v2", "vm2")),
            ("unplug", lambda: driver.unplug_port("extra", "vm2")),
            ("delete port", lambda: driver.delete_port("extra")),
            ("delete volume snapshot", lambda: driver.delete_volume_snapshot("vs")),
            ("delete vm2", lambda: driver.delete_compute("vm2")),
            ("delete vm1", lambda: driver.delete_compute("vm1")),
            ("delete vm3", lambda: driver.delete_compute("vm3")),
            ("migrate volume", lambda: driver.migrate_volume("v2", "pool-b")),
            ("delete volume", lambda: driver.delete_volume("v2")),
            ("delete ports", lambda: delete_ports(driver)),
            ("delete network", lambda: driver.delete_network("net")),
        ]

        async def clock_then(sample: Callable[[], Awaitable[Any]]) -> None:
            clock.advance(30)
            await sample()

        for step, operation in steps:
            await operation()
            check(step)
        await driver.close()

    async def repair_all(driver: SimDriver) -> None:
        for fault in driver.faults():
            await driver.repair(fault.fault_id)

    async def delete_ports(driver: SimDriver) -> None:
        for port in await driver.list_ports():
            await driver.delete_port(port.port_id)

    run(scenario)


def test_a_corrupt_state_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        make(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version"):
        make(tmp_path)

"""Columnar sampling (docs/performance.md, "Cost"): the simulator's ``sample_metrics_columns`` gives
exactly what ``sample_metrics`` gives, the default adapter lets a backend without it (QEMU) be
sampled in columns, and the collector derives the same reports from columns as from samples."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from vimkit.domain.pm_collect import Collector, JobState, ThresholdState, report_series
from vimkit.drivers.base import (
    ColumnarSampler,
    ComputeSpec,
    FaultKind,
    FixedIp,
    MetricColumn,
    MetricName,
    MetricSample,
    NetworkSpec,
    NicSpec,
    ObjectType,
    PortSpec,
    Segmentation,
    SubnetSpec,
    VolumeAttachmentSpec,
    VolumeSpec,
    metric_columns,
    sample_metric_columns,
)
from vimkit.drivers.sim import SimConfig, SimDriver
from vimkit.drivers.sim import metrics as sim_metrics
from vimkit.drivers.sim.workload import Profile, compute_values, nic_increments, sample_compute

HOST, OTHER_HOST = "zone-a-host-01", "zone-a-host-02"
STAMP = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def normalised(columns: Sequence[MetricColumn]) -> dict[tuple[Any, Any], tuple[Any, ...]]:
    return {(c.object_type, c.metric): (c.timestamp, list(c.object_ids), list(c.values),
                                        None if c.sub_object_ids is None else list(c.sub_object_ids),
                                        None if c.epochs is None else list(c.epochs)) for c in columns}


def test_compute_values_with_a_reused_generator_are_the_models_values() -> None:
    rng = random.Random(99)
    rng.gauss(0.0, 1.0)  # leaves a spare normal deviate behind: re-seeding must discard it
    checked = 0
    for index in range(200):
        compute_id = f"vm-{index}"
        profile = Profile.draw(7, compute_id)
        for tick, epoch, paused, load in ((1, 0, False, None), (5, 2, True, None), (9, 1, False, 97.0),
                                          (3, 0, True, 50.0)):
            uptime = 17.5 * tick + index - 40  # some negative: a clock that stepped back
            reference = sample_compute(profile, 7, compute_id, epoch, tick, uptime, 0.3 * index, paused, load)
            assert compute_values(rng, profile, 7, compute_id, epoch, tick, uptime, 0.3 * index, paused, load) == (
                reference.cpu, reference.memory, reference.disk, reference.ar_state)
            for elapsed in (0.0, 5.0, 12.5):
                assert nic_increments(profile, 7, compute_id, "p", epoch, tick, reference.cpu, elapsed, rng) == \
                    nic_increments(profile, 7, compute_id, "p", epoch, tick, reference.cpu, elapsed)
            checked += 1
    assert checked == 800


async def boot(driver: SimDriver, compute_id: str, host: str, ports: int, volume: bool = False) -> None:
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


@pytest.mark.parametrize("ahead", [False, True], ids=["drawn-at-the-instant", "drawn-ahead"])
def test_columnar_sampling_equals_per_sample_sampling_for_the_same_seed(ahead: bool, monkeypatch: Any) -> None:
    """Two simulators with the same seed, the same operations at the same times: one sampled with
    ``sample_metrics``, the other with ``sample_metrics_columns``; reboots, pauses, migrations,
    CPU load, link-down and host-down faults, volumes and a partial selection on the way. With
    ``ahead`` the columnar one has drawn each next sample's deviates before it (and some of
    them are stale by then: the operations between samples)."""
    monkeypatch.setattr(sim_metrics, "_DRAW_DELAY_S", 0.0)
    used: list[int] = []

    async def scenario() -> None:
        clocks = (Clock(), Clock())
        drivers = [SimDriver(config=SimConfig(seed=5, latency_scale=0.0), clock=clock) for clock in clocks]

        async def both(operation: str, *args: Any) -> None:
            for driver in drivers:
                await getattr(driver, operation)(*args)

        for driver in drivers:
            await boot(driver, "vm1", HOST, ports=2, volume=True)
            await boot(driver, "vm2", OTHER_HOST, ports=1)
            await boot(driver, "vm3", HOST, ports=0)
            await driver.create_volume(VolumeSpec("idle", "idle", 10, "pool-a", "zone-a"))
        pending: list[list[str]] = []  # fault ids in both simulators, repaired first in, first out
        steps = {
            2: ("reboot_compute", "vm1"), 3: ("pause_compute", "vm2"), 5: ("unpause_compute", "vm2"),
            6: ("inject", FaultKind.CPU_LOAD, HOST, {"load": 97}), 7: ("inject", FaultKind.NETWORK_LINK_DOWN, "net"),
            8: ("inject", FaultKind.HOST_DOWN, OTHER_HOST), 9: ("repair",), 10: ("migrate_compute", "vm3", "zone-a-host-03"),
            11: ("repair",), 12: ("repair",),
        }
        compared = 0
        for step in range(14):
            for clock in clocks:
                clock.now += 5.0
            operation = steps.get(step)
            if operation is not None and operation[0] == "inject":
                pending.append([await driver.inject(*operation[1:]) for driver in drivers])
            elif operation is not None and operation[0] == "repair":
                for driver, fault_id in zip(drivers, pending.pop(0)):
                    await driver.repair(fault_id)
            elif operation is not None:
                await both(*operation)
            selection = ["vm1", "vm3", "idle"] if step == 4 else None
            expected = metric_columns(await drivers[0].sample_metrics(selection))
            prepared = dict(drivers[1].__dict__.get("_prepared") or {})
            actual = await drivers[1].sample_metrics_columns(selection)
            if ahead:
                await drivers[1]._draw_task  # the next sample's deviates, drawn now
                used.append(sum(1 for vm, ready in prepared.items()
                                if ready[:2] == (drivers[1]._state.computes[vm].epoch,
                                                 drivers[1]._state.computes[vm].tick)))
            assert normalised(actual) == normalised(expected), step
            assert [(c.object_type, c.metric) for c in actual] == [(c.object_type, c.metric) for c in expected]
            compared += sum(len(c.values) for c in actual)
        # both simulators were left in the same state, too
        assert drivers[0]._state.to_document(5) == drivers[1]._state.to_document(5)
        assert compared > 150

    asyncio.run(scenario())
    if ahead:  # most samples used deviates drawn ahead; after a reboot, say, they could not
        assert used[0] == 0 and sum(used) >= 25 and min(used[1:]) < 3, used


def test_the_adapter_groups_samples_per_metric_in_order() -> None:
    cpu, rx, used = MetricName.CPU_UTILISATION, MetricName.NET_RX_BYTES, MetricName.STORAGE_UTILISATION
    samples = [MetricSample(ObjectType.COMPUTE, "a", cpu, 1.0, STAMP, None, 0),
               MetricSample(ObjectType.COMPUTE, "a", rx, 10.0, STAMP, "p1", 0),
               MetricSample(ObjectType.COMPUTE, "b", cpu, 2.0, STAMP, None, 3),
               MetricSample(ObjectType.COMPUTE, "b", rx, 20.0, STAMP, "p2", 3),
               MetricSample(ObjectType.STORAGE, "v", used, 5.5, STAMP)]
    columns = metric_columns(samples)
    assert [(c.metric, list(c.object_ids), list(c.values)) for c in columns] == [
        (cpu, ["a", "b"], [1.0, 2.0]), (rx, ["a", "b"], [10.0, 20.0]), (used, ["v"], [5.5])]
    assert columns[0].sub_object_ids is None and columns[0].epochs == [0, 3]
    assert columns[1].sub_object_ids == ["p1", "p2"]
    assert columns[2].sub_object_ids is None and columns[2].epochs is None
    assert [s for c in columns for s in c.samples()] == [samples[0], samples[2], samples[1], samples[3], samples[4]]
    assert metric_columns([]) == []


class PerSampleOnly:
    """A backend with only ``sample_metrics`` (as the QEMU driver)."""

    def __init__(self, samples: list[MetricSample]) -> None:
        self.samples = samples
        self.asked: list[Sequence[str] | None] = []

    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        self.asked.append(object_ids)
        return [s for s in self.samples if object_ids is None or s.object_id in object_ids]


def test_sample_metric_columns_adapts_a_backend_without_columns() -> None:
    samples = [MetricSample(ObjectType.COMPUTE, vm, MetricName.CPU_UTILISATION, value, STAMP)
               for vm, value in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    backend = PerSampleOnly(samples)
    assert not isinstance(backend, ColumnarSampler)
    (column,) = asyncio.run(sample_metric_columns(backend, ("a", "c")))  # type: ignore[arg-type]
    assert backend.asked == [("a", "c")]
    assert (list(column.object_ids), list(column.values)) == (["a", "c"], [1.0, 3.0])
    assert isinstance(SimDriver(config=SimConfig(latency_scale=0.0)), ColumnarSampler)


def series_values(series: dict[str, Any], vm: str, name: str) -> list[Any] | None:
    for index, (o, m) in enumerate(zip(series["seriesObject"], series["seriesMetric"])):
        if series["objects"][o] == vm and series["measurements"][m] == name:
            return [column[index] for column in series["values"]]
    return None


def test_the_collector_derives_columns_to_the_hand_computed_values() -> None:
    """Columns into two jobs over overlapping objects (each window measures part of each column)
    and a threshold, with a counter epoch change, unannounced resets and an object missing from
    some ticks; the id sequences are reused between ticks, as a backend may. Every value of every
    report is checked against a plain computation over the samples."""
    cpu, rx = MetricName.CPU_UTILISATION, MetricName.NET_RX_BYTES
    jobs = {"j1": {"vm1", "vm2"}, "j2": {"vm2", "vm3"}}
    collector = Collector()
    for job_id, members in jobs.items():
        collector.add_job(JobState(job_id, "g", "VirtualCompute", ("VCpuUsageMean", "VCpuUsagePeak", "VNetByteIncoming"),
                                   10_000, 20_000, 0, None, frozenset(members), False), dict.fromkeys(members, "g"))
    collector.add_threshold(ThresholdState("t", "g", "VirtualCompute", "VCpuUsageMean", 50.0, 2.0, 10_000, 0,
                                           frozenset({"vm3"})), {"vm3": "g"})
    every = ["vm1", "vm2", "vm3"]
    without_vm2 = ["vm1", "vm3"]
    samples: dict[str, list[tuple[int, float, float, int]]] = {vm: [] for vm in every}  # (ms, cpu, rx, epoch)
    reports, crossings = [], []
    for tick in range(13):
        now_ms = tick * 5_000
        vms = without_vm2 if tick in (4, 5) else every  # vm2 stopped for a while
        cpus, counters, epochs = [], [], []
        for vm in vms:
            index = every.index(vm)
            load = 40.0 + 15.0 * (tick // 4 % 2) if vm == "vm3" else 10.0 * index + tick * 3 % 7
            counter = float(100 * tick * (index + 1) % 900)  # falls now and then: an unannounced reset
            epoch = 1 if vm == "vm1" and tick >= 7 else 0
            samples[vm].append((now_ms, load, counter, epoch))
            cpus.append(load)
            counters.append(counter)
            epochs.append(epoch)
        subs = [f"{vm}-p" for vm in vms]
        outcome = collector.ingest_columns(now_ms, [MetricColumn(ObjectType.COMPUTE, cpu, STAMP, vms, cpus),
                                                    MetricColumn(ObjectType.COMPUTE, rx, STAMP, vms, counters, subs,
                                                                 epochs)])
        reports += [(report.job_id, report.end_ms, *report_series(report, report.layout)) for report in outcome.reports]
        crossings += [(c.object_id, c.direction, c.value, c.at_ms) for c in outcome.crossings]

    def expected(vm: str, end_ms: int) -> tuple[float | None, float | None, float | None]:
        loads = [load for at, load, _c, _e in samples[vm] if end_ms - 10_000 < at <= end_ms]
        delta = None
        for (_at, _l, previous, previous_epoch), (at, _load, value, epoch) in zip(samples[vm], samples[vm][1:]):
            if end_ms - 10_000 < at <= end_ms:
                grown = value - previous if epoch == previous_epoch and value >= previous else value
                delta = (delta or 0.0) + grown
        if not loads:
            return None, None, delta
        return sum(loads) / len(loads), max(loads), delta

    assert [(job_id, end_ms) for job_id, end_ms, _s, _o in reports] == [
        (job_id, end) for end in (20_000, 40_000, 60_000) for job_id in jobs]
    for job_id, end_ms, series, objects in reports:
        assert set(objects) == jobs[job_id]
        for vm in jobs[job_id]:
            found = [series_values(series, vm, name) for name in ("VCpuUsageMean", "VCpuUsagePeak", "VNetByteIncoming")]
            want = [expected(vm, end) for end in (end_ms - 10_000, end_ms)]
            assert found == [[w[k] for w in want] for k in range(3)], (job_id, end_ms, vm)
    assert crossings == [("vm3", "UP", 55.0, 30_000), ("vm3", "DOWN", 47.5, 40_000)]


def test_reports_from_columnar_sampling_equal_reports_from_samples_entry_for_entry() -> None:
    """End to end, twin simulators and twin collectors (two overlapping jobs: one window measures
    part of each column): ``sample_metrics`` into ``ingest`` and ``sample_metrics_columns`` into
    ``ingest_columns`` give the same report entries, values and order (the order samples one object
    at a time gave)."""
    from vimkit.domain.pm_catalogue import resolve_metrics
    from vimkit.domain.pm_export import report_entries

    async def scenario() -> list[list[list[dict[str, Any]]]]:
        clock = Clock()
        measured = resolve_metrics("VirtualCompute", None, ["VirtualisedComputeResource",
                                                            "VirtualisedNetworkInterface"])[0]
        results = []
        for columnar in (False, True):
            clock.now = 1_800_000_000.0
            driver = SimDriver(config=SimConfig(seed=11, latency_scale=0.0), clock=clock)
            for index in range(6):
                await boot(driver, f"vm{index}", HOST if index % 2 else OTHER_HOST, ports=1 + index % 2)
            await driver.pause_compute("vm3")
            collector = Collector()
            vms = [f"vm{index}" for index in range(6)]
            collector.add_job(JobState("a", "g", "VirtualCompute", measured, 10_000, 20_000, 0, None,
                                       frozenset(vms[:4]), False), dict.fromkeys(vms, "g"))
            collector.add_job(JobState("b", "g", "VirtualCompute", measured[:3] + measured[-2:], 10_000, 10_000, 0,
                                       None, frozenset(vms[2:]), False), dict.fromkeys(vms, "g"))
            entries = []
            for tick in range(9):
                clock.now += 5.0
                now_ms = round(clock.now * 1000)
                if tick == 4:
                    await driver.reboot_compute("vm1")
                if columnar:
                    outcome = collector.ingest_columns(now_ms, await driver.sample_metrics_columns(collector.sampled))
                else:
                    outcome = collector.ingest(now_ms, await driver.sample_metrics(collector.sampled))
                entries += [report_entries(report_series(report, report.layout)[0], str) for report in outcome.reports]
            results.append(entries)
        return results

    by_samples, by_columns = asyncio.run(scenario())
    assert by_columns == by_samples and len(by_samples) == 7
    # an object's six utilisation entries together, then (after every object's) its vNICs' four
    assert [e["objectInstanceId"] for e in by_columns[0][:12]] == ["vm0"] * 6 + ["vm1"] * 6
    assert [e.get("subObjectInstanceId") for e in by_columns[0][24:28]] == ["vm0-p0"] * 4

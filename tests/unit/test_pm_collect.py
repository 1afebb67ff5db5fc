"""The collector engine (vimkit.domain.pm_collect) driven by hand-made samples and a fake clock."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import orjson

from vimkit.domain.pm_collect import Collector, JobState, ThresholdState, report_blob, report_series
from vimkit.drivers.model import MetricName, ObjectType
from vimkit.drivers.specs import MetricSample

CPU, RX = MetricName.CPU_UTILISATION, MetricName.NET_RX_BYTES
STAMP = datetime(2026, 1, 1, tzinfo=UTC)


def cpu(vm: str, value: float) -> MetricSample:
    return MetricSample(ObjectType.COMPUTE, vm, CPU, value, STAMP)


def rx(vm: str, value: float, epoch: int = 0, port: str = "p1") -> MetricSample:
    return MetricSample(ObjectType.COMPUTE, vm, RX, value, STAMP, port, epoch)


def job(job_id: str, members: set[str], group: str = "g1", collection_s: int = 10, reporting_s: int = 20,
        boundary_s: int | None = None,
        measurements: tuple[str, ...] = ("VCpuUsageMean", "VCpuUsagePeak", "VNetByteIncoming")) -> JobState:
    return JobState(job_id, group, "VirtualCompute", measurements, collection_s * 1000, reporting_s * 1000, 0,
                    boundary_s * 1000 if boundary_s is not None else None, frozenset(members), False)


def values(series: dict, vm: str, name: str) -> list:
    index = next(i for i, (o, m) in enumerate(zip(series["seriesObject"], series["seriesMetric"]))
                 if series["objects"][o] == vm and series["measurements"][m] == name)
    return [column[index] for column in series["values"]]


def test_means_peaks_and_deltas_with_a_counter_reset_mid_period() -> None:
    collector = Collector()
    collector.add_job(job("j1", {"vm1"}), {"vm1": "g1"})
    assert collector.sampled == ("vm1",)
    ticks = [(0, 5.0, 100, 0), (5, 10.0, 150, 0), (10, 20.0, 300, 0), (15, 30.0, 40, 1), (20, 40.0, 100, 1)]
    reports = []
    for second, load, counter, epoch in ticks:
        outcome = collector.ingest(second * 1000, [cpu("vm1", load), rx("vm1", counter, epoch)])
        reports += outcome.reports
    (report,) = reports
    assert (report.start_ms, report.end_ms, report.final) == (0, 20_000, False)
    series = report_series(report)[0]
    assert series["periodEnds"] == [10_000, 20_000]
    assert values(series, "vm1", "VCpuUsageMean") == [15.0, 35.0]
    assert values(series, "vm1", "VCpuUsagePeak") == [20.0, 40.0]
    # (0,10]: 50 + 150; (10,20]: the counter restarted at 15 s: 40 since the restart, then 60
    assert values(series, "vm1", "VNetByteIncoming") == [200, 100]
    assert series["subObjects"] == ["p1"] and series["seriesSub"].count(0) == 1


def test_a_report_holds_only_its_jobs_objects() -> None:
    collector = Collector()
    collector.add_job(job("a", {"vm-a"}, group="ga"), {"vm-a": "ga"})
    collector.add_job(job("b", {"vm-b"}, group="gb"), {"vm-b": "gb"})
    reports = []
    for second in (0, 5, 10, 15, 20):
        reports += collector.ingest(second * 1000, [cpu("vm-a", 1.0), cpu("vm-b", 2.0)]).reports
    by_job = {report.job_id: report_series(report)[0] for report in reports}
    assert set(by_job["a"]["objects"]) == {"vm-a"}
    assert set(by_job["b"]["objects"]) == {"vm-b"}


def test_thresholds_cross_both_ways() -> None:
    collector = Collector()
    collector.add_threshold(ThresholdState("t1", "g1", "VirtualCompute", "VCpuUsageMean", 50.0, 5.0, 5_000, 0,
                                           frozenset({"vm1"})), {"vm1": "g1"})
    seen = []
    for second, load in enumerate([10, 60, 70, 52, 48, 40, 30, 56, 54]):
        for crossing in collector.ingest((second + 1) * 5_000, [cpu("vm1", load)]).crossings:
            seen.append((crossing.direction, crossing.value, crossing.object_id))
    assert seen == [("UP", 60, "vm1"), ("DOWN", 40, "vm1"), ("UP", 56, "vm1")]
    assert collector.thresholds["t1"].states == {"vm1": "UP"}


def test_reporting_boundary_ends_the_job() -> None:
    collector = Collector()
    collector.add_job(job("j1", {"vm1"}, boundary_s=25), {"vm1": "g1"})
    reports = []
    for second in range(0, 45, 5):
        reports += collector.ingest(second * 1000, [cpu("vm1", 1.0)]).reports
    (report,) = reports
    assert report.final and report.end_ms == 20_000
    assert collector.jobs["j1"].finished and collector.sampled == ()


def test_missed_ticks_close_the_period_late() -> None:
    collector = Collector()
    collector.add_job(job("j1", {"vm1"}, reporting_s=10), {"vm1": "g1"})
    first = collector.ingest(5_000, [cpu("vm1", 10.0)])
    assert first.reports == []
    late = collector.ingest(25_000, [cpu("vm1", 90.0)])  # the ticks at 10, 15 and 20 s never ran
    (report,) = late.reports
    assert report.end_ms == 10_000 and values(report_series(report)[0], "vm1", "VCpuUsageMean") == [10.0]
    (report,) = collector.ingest(30_000, [cpu("vm1", 70.0)]).reports
    assert report.end_ms == 30_000 and values(report_series(report)[0], "vm1", "VCpuUsageMean") == [80.0]


def test_members_change_and_forgotten_baselines() -> None:
    collector = Collector()
    collector.add_job(job("j1", {"vm1"}), {"vm1": "g1"})
    collector.ingest(0, [rx("vm1", 1_000)])
    collector.set_members("j1", frozenset({"vm2"}), {"vm2": "g1"})
    assert collector.sampled == ("vm2",) and collector.groups == {"vm2": "g1"}
    collector.set_members("j1", frozenset({"vm1", "vm2"}), {"vm1": "g1"})
    reports = []
    for second, counter in ((5, 50_000), (10, 50_100), (15, 50_200), (20, 50_300)):
        reports += collector.ingest(second * 1000, [rx("vm1", counter)]).reports
    # vm1's old baseline (1,000) was forgotten: its first sample back is a new baseline
    assert values(report_series(reports[0])[0], "vm1", "VNetByteIncoming") == [100, 200]


def test_the_layout_is_kept_between_reports_and_silent_objects_are_not_entries() -> None:
    from vimkit.domain.pm_export import report_entries

    collector = Collector()
    collector.add_job(job("j1", {"vm1", "vm2"}, reporting_s=10), {"vm1": "g1", "vm2": "g1"})
    reports = []
    for second in range(0, 25, 5):
        samples = [cpu("vm1", 1.0)] + ([cpu("vm2", 2.0)] if second <= 10 else [])
        reports += collector.ingest(second * 1000, samples).reports
    first, second = reports
    assert first.layout is second.layout  # laid out once
    (_document, present) = report_series(first)
    assert present == ["vm1", "vm2"]
    document, present = report_series(second, second.layout)
    assert present == ["vm1"]  # vm2 stopped: no values in the second report
    entries = report_entries(document, str)
    assert {entry["objectInstanceId"] for entry in entries} == {"vm1"}
    assert [v["value"] for v in entries[0]["performanceValues"]] == [1]


def test_report_blob_is_the_compressed_document_also_when_its_head_is_reused() -> None:
    """report_blob keeps the serialised ids and layout between reports of a job: every blob must
    still decompress to exactly the report's document, also after objects joined (a new layout)."""
    collector = Collector()
    collector.add_job(job("j1", {"vm1", "vm2"}, reporting_s=10), {"vm1": "g1", "vm2": "g1"})
    blobs = []
    for second in range(0, 45, 5):
        samples = [cpu("vm1", second + 0.5), rx("vm1", 100.0 * second)]
        if second >= 25:  # vm2 appears: the layout grows, the cached head is stale
            samples += [cpu("vm2", 3.0 * second), rx("vm2", 7.0 * second, port="p2")]
        for report in collector.ingest(second * 1000, samples).reports:
            expected, objects = report_series(report, report.layout)
            blob, blob_objects = report_blob(report, report.layout)
            assert orjson.loads(zlib.decompress(blob)) == orjson.loads(orjson.dumps(expected))
            assert blob_objects == objects
            blobs.append((report.end_ms, objects, report.layout.prefix[0] if report.layout.prefix else None))
    assert [(end, objects) for end, objects, _v in blobs] == [
        (10_000, ["vm1"]), (20_000, ["vm1"]), (30_000, ["vm1", "vm2"]), (40_000, ["vm1", "vm2"])]
    assert blobs[0][2] == blobs[1][2] != blobs[2][2] == blobs[3][2]

"""Performance management through HTTP (rest-binding.md §8, docs/performance.md), on SQLite and PostgreSQL.

The servers run the collector on a fake clock that the simulated driver reads too: the test moves
the clock and runs each tick itself (``PerformanceService.run_tick``), one sample a second. Every
expected mean, peak and delta is recomputed here from the seeded workload model
(:mod:`vimkit.drivers.sim.workload`) — the same model the simulator draws from, replayed without
it — so a report is checked to the last bit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.api.test_notifications import FAST
from tests.conftest import ADMIN_ID, ADMIN_SECRET, RunningServer, _free_port, assert_problem
from tests.receivers import Receiver
from vimkit.app import build_services, create_app
from vimkit.config import Settings
from vimkit.drivers.sim.workload import Profile, nic_increments, sample_compute

WAIT = {"Prefer": "wait=20"}
T0 = (int(time.time()) // 60 + 2) * 60  # a whole minute just ahead of the real clock
COMPUTE_METRICS = ("VCpuUsageMean", "VCpuUsagePeak", "VMemoryUsageMean", "VMemoryUsagePeak", "VDiskUsageMean",
                   "VDiskUsagePeak")
NET_METRICS = ("VNetByteIncoming", "VNetByteOutgoing", "VNetPacketIncoming", "VNetPacketOutgoing")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


def start_pm_server(data_dir: Path, database_url: str, clock: FakeClock, **overrides: Any) -> RunningServer:
    """``tests.conftest.start_server`` with the collector and the simulator on ``clock``."""
    settings = Settings(data_dir=data_dir, database_url=database_url, port=_free_port(), admin_client_id=ADMIN_ID,
                        admin_client_secret=ADMIN_SECRET, log_level="warning", sim_latency_scale=0,
                        pm_sample_interval=1, **{**FAST, **overrides})
    services = build_services(settings)
    services.performance.clock = clock
    services.performance.autorun = False
    services.infrastructure.driver._clock = clock
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services), host="127.0.0.1", port=settings.port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "vimkit test server did not start"
        time.sleep(0.01)
    return RunningServer(settings, f"http://127.0.0.1:{settings.port}", server, thread, services)


@dataclass
class Pm:
    server: RunningServer
    clock: FakeClock

    def tick(self, first: int, last: int) -> None:
        """Run the ticks at T0+first … T0+last (inclusive), one a second."""
        for second in range(first, last + 1):
            self.clock.now = T0 + second
            self.server.services.performance.run_tick(T0 + second)  # type: ignore[attr-defined]


@pytest.fixture
def pm(database_url: str, tmp_path: Path) -> Iterator[Pm]:
    clock = FakeClock(T0)
    server = start_pm_server(tmp_path / "data", database_url, clock)
    try:
        yield Pm(server, clock)
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Guest:
    """One simulated compute's workload, replayed from the seeded model as the simulator draws it."""

    compute_id: str
    ports: list[str]
    booted: float
    seed: int = 0
    epoch: int = 0
    tick: int = 0
    ar_state: float = 0.0
    last: float | None = None
    samples: dict[float, dict[tuple[str, str | None], float]] = field(default_factory=dict)

    def reboot(self, at: float) -> None:
        self.epoch, self.booted, self.tick, self.ar_state, self.last = self.epoch + 1, at, 0, 0.0, None

    def sample(self, at: float, load: float | None = None) -> None:
        profile = Profile.draw(self.seed, self.compute_id)
        self.tick += 1
        result = sample_compute(profile, self.seed, self.compute_id, self.epoch, self.tick, at - self.booted,
                                self.ar_state, False, load)
        self.ar_state = result.ar_state
        elapsed = at - (self.last if self.last is not None else self.booted)
        self.last = at
        values: dict[tuple[str, str | None], float] = {
            ("cpu", None): result.cpu, ("memory", None): result.memory, ("disk", None): result.disk}
        for port in self.ports:
            increments = nic_increments(profile, self.seed, self.compute_id, port, self.epoch, self.tick,
                                        result.cpu, elapsed)
            for name, increment in zip(("rx", "tx", "rxp", "txp"), increments):
                values[(name, port)] = increment
        self.samples[at] = values

    def period(self, end: float, length: int = 5) -> dict[tuple[str, str | None], float]:
        """The measurements of the collection period (end − length, end], computed the plain way."""
        taken = [self.samples[at] for at in sorted(self.samples) if end - length < at <= end]
        expected: dict[tuple[str, str | None], float] = {}
        for source, mean, peak in (("cpu", "VCpuUsageMean", "VCpuUsagePeak"),
                                   ("memory", "VMemoryUsageMean", "VMemoryUsagePeak"),
                                   ("disk", "VDiskUsageMean", "VDiskUsagePeak")):
            series = [sample[(source, None)] for sample in taken]
            total = 0.0
            for value in series:
                total += value
            expected[(mean, None)] = total / len(series)
            expected[(peak, None)] = max(series)
        for port in self.ports:
            for source, name in zip(("rx", "tx", "rxp", "txp"), NET_METRICS):
                expected[(name, port)] = sum(sample[(source, port)] for sample in taken)
        return expected


def network(api: httpx.Client) -> str:
    response = api.post("/network/v1/networks", json={"networkResourceName": "pm-net"})
    assert response.status_code == 201, response.text
    return response.json()["networkResourceId"]


def compute(api: httpx.Client, network_id: str | None = None, **body: Any) -> dict[str, Any]:
    body.setdefault("computeFlavourId", "m1.tiny")
    if network_id is not None:
        body["interfaceData"] = [{"networkId": network_id}]
    response = api.post("/compute/v1/computes", json=body, headers=WAIT)
    assert response.status_code == 201, response.text
    assert response.json()["provisioningState"] == "ALLOCATED", response.text
    return response.json()


def create_job(api: httpx.Client, expect: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("objectType", "VirtualCompute")
    body.setdefault("collectionPeriod", 5)
    body.setdefault("reportingPeriod", 5)
    if "performanceMetric" not in body:
        body.setdefault("performanceMetricGroup", ["VirtualisedComputeResource"])
    response = api.post("/performance/v1/pm_jobs", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def reports(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/performance/v1/pm_jobs/{job_id}/reports")
    assert response.status_code == 200, response.text
    return response.json()


def entries_by_key(report: dict[str, Any]) -> dict[tuple[str, str, str | None], list[tuple[str, float]]]:
    return {(e["objectInstanceId"], e["performanceMetric"], e.get("subObjectInstanceId")):
            [(v["timeStamp"], v["value"]) for v in e["performanceValues"]] for e in report["entries"]}


def stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + second))


def test_report_has_the_exact_means_peaks_and_deltas_across_a_reboot(pm: Pm, receiver: Receiver) -> None:
    with pm.server.new_consumer().client() as api:
        assert api.post("/performance/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
        node = compute(api, network(api), computeName="node-1")
        port = node["virtualNetworkInterface"][0]["resourceId"]
        guest = Guest(node["computeId"], [port], booted=T0)
        job = create_job(api, objectInstanceIds=[node["computeId"]], reportingPeriod=15,
                         performanceMetricGroup=["VirtualisedComputeResource", "VirtualisedNetworkInterface"])
        assert job["state"] == "ACTIVE" and job["collectionPeriod"] == 5
        for second in range(0, 8):
            guest.sample(T0 + second)
        pm.tick(0, 7)
        # a reboot in the middle of the second period: the guest's counters restart from zero
        rebooted = api.post(f"/compute/v1/computes/{node['computeId']}/operate",
                            json={"computeOperation": "REBOOT"}, headers=WAIT)
        assert rebooted.status_code == 200, rebooted.text
        guest.reboot(T0 + 7)
        for second in range(8, 16):
            guest.sample(T0 + second)
        pm.tick(8, 15)

        (note,) = receiver.wait_for(1)
        assert note["notificationType"] == "PerformanceInformationAvailableNotification"
        assert note["pmJobId"] == job["pmJobId"] and note["objectType"] == "VirtualCompute"
        assert note["objectInstanceIds"] == [node["computeId"]] and note["_links"]["subscription"]["href"]
        report = api.get(note["_links"]["performanceReport"]["href"])
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["pmJobId"] == job["pmJobId"] and (body["periodStart"], body["periodEnd"]) == (stamp(0), stamp(15))
        got = entries_by_key(body)
        expected: dict[tuple[str, str, str | None], list[tuple[str, float]]] = {}
        for end in (5, 10, 15):
            for (name, sub), value in guest.period(T0 + end).items():
                expected.setdefault((node["computeId"], name, sub), []).append((stamp(end), value))
        assert got == expected
        deltas = [value for _stamp, value in got[(node["computeId"], "VNetByteIncoming", port)]]
        assert all(isinstance(value, int) and value > 0 for value in deltas)
        assert reports(api, job["pmJobId"])[0]["reportId"] == body["reportId"]


def test_filtered_jobs_take_in_later_objects_of_their_own_group_only(pm: Pm) -> None:
    owner, stranger = pm.server.new_consumer("owner"), pm.server.new_consumer("stranger")
    with owner.client() as api, stranger.client() as other, pm.server.client() as admin:
        job = create_job(api, objectFilter="(eq,metadata/cluster,c1)", reportingPeriod=5)
        everything = create_job(admin, reportingPeriod=5)
        pm.tick(0, 0)
        wanted = compute(api, metadata={"cluster": "c1"})
        compute(api, metadata={"cluster": "c2"})
        theirs = compute(other, metadata={"cluster": "c1"})
        guest = Guest(wanted["computeId"], [], booted=T0)
        pm.tick(1, 5)  # the period in which they were allocated: they join when it ends
        assert reports(api, job["pmJobId"]) == []
        for second in range(6, 11):
            guest.sample(T0 + second)
        pm.tick(6, 10)
        (summary,) = reports(api, job["pmJobId"])
        assert summary["objectCount"] == 1 and summary["periodEnd"] == stamp(10)
        report = api.get(summary["_links"]["self"]["href"]).json()
        expected = guest.period(T0 + 10)
        assert entries_by_key(report) == {(wanted["computeId"], name, None): [(stamp(10), expected[(name, None)])]
                                          for name in COMPUTE_METRICS}
        # the admin's job measures every group's computes; nobody else sees the owner's job
        (admin_report,) = reports(admin, everything["pmJobId"])
        assert admin_report["objectCount"] == 3
        assert theirs["computeId"] in {key[0] for key in entries_by_key(
            admin.get(admin_report["_links"]["self"]["href"]).json())}
        for url in (f"/performance/v1/pm_jobs/{job['pmJobId']}", f"/performance/v1/pm_jobs/{job['pmJobId']}/reports",
                    summary["_links"]["self"]["href"]):
            assert_problem(other.get(url), 404)
        assert other.get("/performance/v1/pm_jobs").json() == []
        assert_problem(other.delete(f"/performance/v1/pm_jobs/{job['pmJobId']}"), 404)
        assert_problem(other.post("/performance/v1/pm_jobs", json={
            "objectType": "VirtualCompute", "objectInstanceIds": [wanted["computeId"]],
            "performanceMetric": ["VCpuUsageMean"], "collectionPeriod": 5, "reportingPeriod": 5}),
            400, "objectInstanceIds/0")


def test_thresholds_cross_up_and_down_with_and_without_hysteresis(pm: Pm, receiver: Receiver) -> None:
    with pm.server.new_consumer().client() as api, pm.server.client() as admin:
        band = 8
        for _attempt in range(20):  # a guest whose own load stays clear of the loads injected below
            node = compute(api)
            compute_id = node["computeId"]
            calm = Guest(compute_id, [], booted=T0)
            for second in range(0, 41):
                calm.sample(T0 + second)
            level = round(max(calm.period(T0 + end)[("VCpuUsageMean", None)] for end in range(5, 41, 5))) + 12
            guest = Guest(compute_id, [], booted=T0)
            for second in range(0, 41):
                guest.sample(T0 + second, level + band / 2 if 10 < second <= 20 else
                             level + band + 10 if 20 < second <= 30 else None)
            means = {end: guest.period(T0 + end)[("VCpuUsageMean", None)] for end in range(5, 41, 5)}
            if (max(means[5], means[10]) < level and level < means[15] and max(means[15], means[20]) < level + band
                    and means[25] > level + band and max(means[35], means[40]) < level - band):
                break
        else:
            pytest.fail("no calm guest in 20 attempts")
        assert api.post("/performance/v1/subscriptions", json={
            "callbackUri": receiver.url, "filter": {"notificationTypes": ["ThresholdCrossedNotification"]}}
        ).status_code == 201
        plain, hysteretic = (api.post("/performance/v1/thresholds", json={
            "objectType": "VirtualCompute", "objectInstanceIds": [compute_id], "performanceMetric": "VCpuUsageMean",
            "thresholdType": "SINGLE_VALUE", "thresholdDetails": {"thresholdValue": level, "hysteresis": hysteresis},
            "collectionPeriod": 5}).json() for hysteresis in (0, band))
        assert plain["thresholdDetails"] == {"thresholdValue": level, "hysteresis": 0}
        pm.tick(0, 10)  # calm: below both, nothing is crossed
        fault = admin.post("/admin/v1/faults", json={"kind": "CPU_LOAD", "targetId": compute_id,
                                                    "params": {"load": level + band / 2}}).json()
        pm.tick(11, 20)  # inside the band: only the threshold without hysteresis goes UP
        admin.delete(f"/admin/v1/faults/{fault['id']}")
        fault = admin.post("/admin/v1/faults", json={"kind": "CPU_LOAD", "targetId": compute_id,
                                                    "params": {"load": level + band + 10}}).json()
        pm.tick(21, 30)  # above the band: now the other one goes UP too, the first does not repeat
        admin.delete(f"/admin/v1/faults/{fault['id']}")
        pm.tick(31, 40)  # calm again: both go DOWN
        notes = receiver.wait_for(4)
        seen = [(n["thresholdId"], n["crossingDirection"], n["periodEnd"]) for n in notes]
        assert seen == [(plain["thresholdId"], "UP", stamp(15)), (hysteretic["thresholdId"], "UP", stamp(25)),
                        (plain["thresholdId"], "DOWN", stamp(35)), (hysteretic["thresholdId"], "DOWN", stamp(35))]
        assert all(n["objectInstanceId"] == compute_id and n["performanceMetric"] == "VCpuUsageMean"
                   and n["objectType"] == "VirtualCompute" for n in notes)
        assert [n["performanceValue"] for n in notes] == [means[15], means[25], means[35], means[35]]
        assert api.delete(f"/performance/v1/thresholds/{plain['thresholdId']}").status_code == 204
        assert_problem(api.get(f"/performance/v1/thresholds/{plain['thresholdId']}"), 404)
        assert [t["thresholdId"] for t in api.get("/performance/v1/thresholds").json()] == [hysteretic["thresholdId"]]


def test_a_pm_job_survives_a_restart(database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock(T0)
    server = start_pm_server(tmp_path / "data", database_url, clock)
    try:
        consumer = server.new_consumer()
        with consumer.client() as api:
            api.post("/performance/v1/subscriptions", json={"callbackUri": receiver.url})
            node = compute(api)
            job = create_job(api, objectInstanceIds=[node["computeId"]], reportingPeriod=10)
        Pm(server, clock).tick(0, 10)
        receiver.wait_for(1)
        server.stop()
        clock.now = T0 + 12
        server = start_pm_server(tmp_path / "data", database_url, clock)
        with server.client(consumer.token()) as api:
            assert api.get(f"/performance/v1/pm_jobs/{job['pmJobId']}").json()["state"] == "ACTIVE"
            Pm(server, clock).tick(12, 30)  # collection resumes with the next whole period (15 s)
            notes = receiver.wait_for(3)
            assert [n["pmJobId"] for n in notes] == [job["pmJobId"]] * 3
            summaries = reports(api, job["pmJobId"])
            assert [(s["periodStart"], s["periodEnd"]) for s in summaries] == [
                (stamp(0), stamp(10)), (stamp(15), stamp(20)), (stamp(20), stamp(30))]
            first = api.get(summaries[0]["_links"]["self"]["href"]).json()
            assert {e["performanceMetric"] for e in first["entries"]} == set(COMPUTE_METRICS)
    finally:
        server.stop()


BAD_JOBS: list[tuple[dict[str, Any], str]] = [
    ({"objectType": "VirtualRouter"}, "objectType"),
    ({"performanceMetric": ["VCpuUsageAverage"]}, "performanceMetric/0"),
    ({"performanceMetric": ["UsageMeanVStorage"]}, "performanceMetric/0"),
    ({"performanceMetricGroup": ["Everything"]}, "performanceMetricGroup/0"),
    ({"performanceMetricGroup": None, "performanceMetric": None}, "performanceMetric"),
    ({"collectionPeriod": 2, "reportingPeriod": 4}, "collectionPeriod"),
    ({"collectionPeriod": 5.5}, "collectionPeriod"),
    ({"collectionPeriod": "5"}, "collectionPeriod"),
    ({"reportingPeriod": 7}, "reportingPeriod"),
    ({"reportingBoundary": "2001-01-01T00:00:00Z"}, "reportingBoundary"),
    ({"reportingBoundary": "soon"}, "reportingBoundary"),
    ({"objectInstanceIds": ["no-such-compute"]}, "objectInstanceIds/0"),
    ({"objectInstanceIds": []}, "objectInstanceIds"),
    ({"objectFilter": "(eq,nonsense,1)"}, "objectFilter"),
    ({"objectFilter": "cluster=c1"}, "objectFilter"),
    ({"samplingRate": 3}, "samplingRate"),
]


def test_bad_pm_jobs_and_thresholds_are_refused_naming_the_field(pm: Pm) -> None:
    with pm.server.new_consumer().client() as api:
        for change, name in BAD_JOBS:
            body = {"objectType": "VirtualCompute", "performanceMetricGroup": ["VirtualisedComputeResource"],
                    "collectionPeriod": 5, "reportingPeriod": 10, **change}
            body = {key: value for key, value in body.items() if value is not None}
            assert_problem(api.post("/performance/v1/pm_jobs", json=body), 400, name)
        volume = api.post("/storage/v1/storages", json={"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}})
        volume_id = volume.json()["storageId"]
        good = {"objectType": "VirtualStorage", "objectInstanceIds": [volume_id], "performanceMetric": "UsageMeanVStorage",
                "thresholdType": "SINGLE_VALUE", "thresholdDetails": {"thresholdValue": 80, "hysteresis": 2}}
        for change, name in [({"thresholdType": "MULTI_VALUE"}, "thresholdType"),
                             ({"performanceMetric": "VCpuUsageMean"}, "performanceMetric"),
                             ({"performanceMetric": "Nope"}, "performanceMetric"),
                             ({"thresholdDetails": {"thresholdValue": 80, "hysteresis": -1}}, "thresholdDetails/hysteresis"),
                             ({"thresholdDetails": {"hysteresis": 1}}, "thresholdDetails/thresholdValue"),
                             ({"objectInstanceIds": []}, "objectInstanceIds"),
                             ({"objectInstanceIds": [volume_id, "gone"]}, "objectInstanceIds/1"),
                             ({"collectionPeriod": 3}, "collectionPeriod")]:
            assert_problem(api.post("/performance/v1/thresholds", json={**good, **change}), 400, name)
        not_a_number = api.post("/performance/v1/thresholds", content=httpx.Request("POST", "/", json=good).content
                                .replace(b'"thresholdValue":80', b'"thresholdValue":NaN'),
                                headers={"Content-Type": "application/json"})
        assert_problem(not_a_number, 400)
        created = api.post("/performance/v1/thresholds", json=good)
        assert created.status_code == 201, created.text
        assert created.json()["collectionPeriod"] == 5 and created.headers["Location"].endswith(
            created.json()["thresholdId"])
        for url in ("/performance/v1/pm_jobs/nope", "/performance/v1/pm_jobs/nope/reports",
                    "/performance/v1/pm_jobs/nope/reports/nope", "/performance/v1/thresholds/nope"):
            assert_problem(api.get(url), 404)
        assert_problem(api.delete("/performance/v1/pm_jobs/nope"), 404)
        assert_problem(api.get("/performance/v1/pm_jobs", params={"filter": "(eq,nonsense,1)"}), 400, "filter")


def test_catalogue_listing_deletion_boundary_and_metrics_exposition(pm: Pm) -> None:
    consumer = pm.server.new_consumer()
    with consumer.client() as api, pm.server.client() as admin:
        catalogue = api.get("/performance/v1/metrics_catalogue").json()
        assert {m["performanceMetric"] for m in catalogue} == set(COMPUTE_METRICS + NET_METRICS) | {
            "UsageMeanVStorage", "UsagePeakVStorage"}
        assert next(m for m in catalogue if m["performanceMetric"] == "VNetByteIncoming")["subObjectType"]
        node = compute(api, network(api))
        kept = create_job(api, objectInstanceIds=[node["computeId"]], performanceMetric=["VCpuUsagePeak"],
                          reportingBoundary=stamp(12))
        dropped = create_job(api, performanceMetric=["VNetPacketOutgoing"])
        listed = api.get("/performance/v1/pm_jobs", params={"filter": "(eq,performanceMetric,VCpuUsagePeak)"}).json()
        assert [job["pmJobId"] for job in listed] == [kept["pmJobId"]]
        pm.tick(0, 20)
        # the boundary (12 s) ends the job after the period ending at 10 s
        assert [s["periodEnd"] for s in reports(api, kept["pmJobId"])] == [stamp(5), stamp(10)]
        assert api.get(f"/performance/v1/pm_jobs/{kept['pmJobId']}").json()["state"] == "FINISHED"
        assert len(reports(api, dropped["pmJobId"])) == 4
        exposition = admin.get("/metrics")
        assert exposition.status_code == 200 and exposition.headers["content-type"].startswith("text/plain")
        text = exposition.text
        port = node["virtualNetworkInterface"][0]["resourceId"]
        assert f'vimkit_pm_v_cpu_usage_mean{{object_type="VirtualCompute",object_instance_id="{node["computeId"]}",' \
               f'resource_group_id="{consumer.resource_group_id}"}}' in text
        assert f'sub_object_instance_id="{port}"' in text and "vimkit_pm_report_ready_seconds_bucket" in text
        assert_problem(api.get("/metrics"), 403)
        a_report = reports(api, dropped["pmJobId"])[0]["_links"]["self"]["href"]
        assert api.delete(f"/performance/v1/pm_jobs/{dropped['pmJobId']}").status_code == 204
        assert_problem(api.get(a_report), 404)
        assert_problem(api.get(f"/performance/v1/pm_jobs/{dropped['pmJobId']}"), 404)
        assert [job["pmJobId"] for job in api.get("/performance/v1/pm_jobs").json()] == [kept["pmJobId"]]


def test_reports_expire_after_the_retention(database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock(T0)
    server = start_pm_server(tmp_path / "data", database_url, clock, pm_report_retention_hours=0.01)  # 36 s
    try:
        with server.new_consumer().client() as api:
            api.post("/performance/v1/subscriptions", json={"callbackUri": receiver.url,
                                                            "filter": {"pmJobIds": ["someone-else"]}})
            node = compute(api)
            job = create_job(api, objectInstanceIds=[node["computeId"]])
            pm = Pm(server, clock)
            pm.tick(0, 10)
            (first, second) = reports(api, job["pmJobId"])
            assert first["expiryTime"] == stamp(5 + 36)
            pm.tick(60, 60)  # the collector purges once a minute; the two reports have expired
            assert [r["periodEnd"] for r in reports(api, job["pmJobId"])] == [stamp(60)]
            assert_problem(api.get(second["_links"]["self"]["href"]), 404)
        time.sleep(0.3)
        assert receiver.notifications == []  # filtered out by pmJobIds
    finally:
        server.stop()

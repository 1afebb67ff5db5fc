"""Performance management benchmark: one PM job measuring 10,000 computes at a 10 s collection period.

Setup (not timed): 10,000 running computes with one vNIC each are written straight into the
simulator's state file and the ``computes`` table. Then ``vimkit serve`` runs as its own process,
an admin creates one PM job over every compute with all ten compute measurements (the
VirtualisedComputeResource and VirtualisedNetworkInterface groups), collection and reporting
period 10 s, and a subscriber receives the PerformanceInformationAvailableNotifications.

Measured, after one warm-up period: the server process's CPU time over wall time (from
/proc/<pid>/stat, everything the process does: collector, report writes, notification fan-out
and delivery), against the same process idle with the computes loaded but no job; and for each
report, its readiness — ``readyTime − periodEnd``, the report row is written in the same
transaction — plus the server's own ``vimkit_pm_report_ready_seconds`` histogram, which is taken
after the commit.

    .venv/bin/python bench/bench_pm.py [--computes 10000] [--periods 12] [--sample-interval 5]

The server runs at debug log level into its data directory, and the breakdown of the ticks that
stored a report (driver sampling, derivation, writing) is read back from its log.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from bench_flavours import ADMIN, free_port  # noqa: E402

from tests.receivers import Receiver  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load_computes(data_dir: Path, count: int, seed: int) -> None:
    """Running computes, as the compute API would have left them, without going through it."""
    from vimkit.app import build_services
    from vimkit.config import Settings
    from vimkit.drivers.sim.state import SimCompute, SimPort, SimState, save_state
    from vimkit.store.compute_tables import ComputeRow
    from vimkit.store.repository import utcnow

    settings = Settings(data_dir=data_dir, admin_client_id=ADMIN[0], admin_client_secret=ADMIN[1], sim_seed=seed)
    services = build_services(settings)
    hosts = [(host.hostId, host.zoneId) for host in services.infrastructure.inventory.hosts]
    services.close()
    state = SimState()
    now, stamp = time.time(), utcnow()
    rows = []
    for index in range(count):
        compute_id, port_id = str(uuid.uuid4()), str(uuid.uuid4())
        host_id, zone_id = hosts[index % len(hosts)]
        state.ports[port_id] = SimPort(port_id, "bench-net", f"02:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:"
                                       f"{index & 255:02x}:00", compute_id=compute_id, device="eth0")
        state.computes[compute_id] = SimCompute(compute_id, f"node-{index}", host_id, zone_id, 2, 4096, 40, "RUNNING",
                                                booted_at=now, created_at=now, ports=[port_id],
                                                counters={port_id: [0, 0, 0, 0]})
        body = {"computeId": compute_id, "computeName": f"node-{index}", "flavourId": "m1.medium",
                "virtualCpu": {"numVirtualCpu": 2}, "virtualMemory": {"virtualMemSize": 4096},
                "virtualNetworkInterface": [{"resourceId": port_id, "networkPortId": port_id,
                                             "networkId": "bench-net"}],
                "virtualDisks": [], "zoneId": zone_id, "hostId": host_id, "operationalState": "ENABLED",
                "provisioningState": "ALLOCATED", "runningState": "RUNNING", "metadata": {"cluster": "bench"},
                "resourceGroupId": "bench"}
        rows.append({"id": compute_id, "resource_group_id": "bench", "created_at": stamp, "updated_at": stamp,
                     "version": 1, "body": body, "compute_name": body["computeName"], "host_id": host_id,
                     "zone_id": zone_id, "state": "ALLOCATED"})
    save_state(data_dir / "sim", state.to_document(seed))
    services = build_services(settings)
    with services.database.write() as session:
        session.execute(ComputeRow.__table__.insert(), rows)
    services.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure_cpu(pid: int, seconds: float) -> float:
    cpu, wall = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def watch_reports(base: str, token: str, job_id: str, ends: list[float], seen: dict[float, float]) -> None:
    """Readiness as a client sees it: from each period end, poll the job's report listing every
    100 ms until the report of that period is listed (committed and fetchable); ``seen[end]`` is
    the time of that response minus the period end (an upper bound: up to 100 ms of polling
    interval and the HTTP round trip included)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for end in ends:
            time.sleep(max(0.0, end - time.time()))
            while time.time() - end < 60:
                listed = client.get(f"/performance/v1/pm_jobs/{job_id}/reports").json()
                if any(abs(parse_time(report["periodEnd"]) - end) < 0.001 for report in listed):
                    seen[end] = time.time() - end
                    break
                time.sleep(0.1)


def committed(path: Path, ends: list[float]) -> list[float]:
    """Period end to commit of each measured report, from the server's debug log."""
    pattern = re.compile(r"PM report of job \S+ ending (\S+) committed ([-\d.]+) s after the period end")
    found = {parse_time(m[1]): float(m[2]) for m in map(pattern.search, path.read_text().splitlines()) if m}
    return sorted(found[end] for end in ends if end in found)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def tick_breakdown(path: Path) -> tuple[float, float, float, float]:
    """Medians of the start delay, sampling, derivation and write times of the ticks that stored a report."""
    pattern = re.compile(r"PM tick \S+(?: \(began ([-\d.]+) s late\))?: \d+ samples in ([\d.]+) s, derived in "
                         r"([\d.]+) s, (\d+) reports and \d+ crossings stored in ([\d.]+) s")
    rows = [(float(m[1] or "nan"), float(m[2]), float(m[3]), float(m[5]))
            for m in map(pattern.search, path.read_text().splitlines()) if m and int(m[4]) > 0]
    if not rows:
        return (float("nan"),) * 4  # type: ignore[return-value]
    return tuple(sorted(column)[len(column) // 2] for column in zip(*rows))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--computes", type=int, default=10_000)
    parser.add_argument("--periods", type=int, default=12, help="collection periods measured after warm-up")
    parser.add_argument("--collection-period", type=int, default=10)
    parser.add_argument("--sample-interval", type=float, default=5.0, help="VIMKIT_PM_SAMPLE_INTERVAL")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--keep-log", type=Path, help="copy the server's debug log (every tick's breakdown) here")
    args = parser.parse_args()
    period = args.collection_period
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-pm-") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        load_computes(data_dir, args.computes, seed=0)
        print(f"loaded {args.computes} computes in {time.perf_counter() - started:.1f} s")
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "debug", "VIMKIT_PM_SAMPLE_INTERVAL": str(args.sample_interval)}
        server_log = (data_dir / "server.log").open("w")  # debug: each collector tick's breakdown
        server = subprocess.Popen([sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port),
                                   "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL, stderr=server_log)
        base = f"http://127.0.0.1:{port}"
        receiver = Receiver().start()
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            time.sleep(2)
            idle = measure_cpu(server.pid, args.idle_seconds)
            assert api.post("/performance/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            created = api.post("/performance/v1/pm_jobs", json={
                "objectType": "VirtualCompute",
                "performanceMetricGroup": ["VirtualisedComputeResource", "VirtualisedNetworkInterface"],
                "collectionPeriod": period, "reportingPeriod": period})
            assert created.status_code == 201, created.text
            job_id = created.json()["pmJobId"]
            # warm-up: the job's first whole period, plus the counters' first baseline
            time.sleep(period - time.time() % period + period + 0.5)
            first_end = time.time() // period * period + period
            ends = [first_end + index * period for index in range(args.periods)]
            seen: dict[float, float] = {}
            watcher = threading.Thread(target=watch_reports, args=(base, token, job_id, ends, seen), daemon=True)
            watcher.start()
            busy = measure_cpu(server.pid, args.periods * period)
            watcher.join(timeout=65)
            reports = api.get(f"/performance/v1/pm_jobs/{job_id}/reports").json()
            ready = sorted(parse_time(r["readyTime"]) - parse_time(r["periodEnd"]) for r in reports)
            fetchable = sorted(seen.values())
            missing = len(ends) - len(fetchable)
            sample = api.get(f"/performance/v1/pm_jobs/{job_id}/reports/{reports[-1]['reportId']}").json()
            entries = len(sample["entries"])
            metrics = api.get("/metrics").text
            count = float(re.search(r"^vimkit_pm_report_ready_seconds_count (\S+)$", metrics, re.M).group(1))
            total = float(re.search(r"^vimkit_pm_report_ready_seconds_sum (\S+)$", metrics, re.M).group(1))
            within = float(re.search(r'^vimkit_pm_report_ready_seconds_bucket\{le="1.0"\} (\S+)$', metrics,
                                     re.M).group(1))
            ticks = re.search(r"^vimkit_pm_tick_seconds_sum (\S+)$", metrics, re.M).group(1)
            tick_count = re.search(r"^vimkit_pm_tick_seconds_count (\S+)$", metrics, re.M).group(1)
            sizes = {r["objectCount"] for r in reports}
            notes = len(receiver.notifications)
            breakdown = tick_breakdown(data_dir / "server.log")
            commits = committed(data_dir / "server.log", ends)
            print(f"vimkit PM benchmark: {args.computes} computes x 10 measurements (1 vNIC each), collection and "
                  f"reporting period {period} s, sample interval {args.sample_interval:g} s, SQLite, {os.cpu_count()} cores")
            print(f"server CPU idle (computes loaded, no job): {idle * 100:5.1f} % of one core")
            print(f"server CPU with the job, {args.periods} periods: {busy * 100:5.1f} % of one core "
                  f"(collector share {max(0.0, busy - idle) * 100:.1f} %)")
            print(f"collector ticks: {tick_count}, mean {float(ticks) / float(tick_count) * 1000:.0f} ms "
                  f"(sampling + derivation + writes)")
            print(f"reports: {len(reports)} (objects per report {sorted(sizes)}; the last fetched has {entries} "
                  f"entries), notifications received {notes}")
            print(f"readiness (readyTime - periodEnd): p50 {ready[len(ready) // 2] * 1000:.0f} ms, "
                  f"max {ready[-1] * 1000:.0f} ms")
            print(f"readiness as fetched (period end -> listed by GET .../reports), {len(fetchable)} periods"
                  f"{f', {missing} never listed within 60 s' if missing else ''}: "
                  f"p50 {percentile(fetchable, 0.5) * 1000:.0f} ms, p90 {percentile(fetchable, 0.9) * 1000:.0f} ms, "
                  f"max {fetchable[-1] * 1000:.0f} ms; all: {', '.join(f'{v * 1000:.0f}' for v in fetchable)}")
            print(f"readiness after commit (server histogram): mean {total / count * 1000:.0f} ms, "
                  f"{within:.0f} of {count:.0f} within 1 s")
            if commits:
                print(f"readiness = period end -> report committed (server log), {len(commits)} periods: "
                      f"p50 {percentile(commits, 0.5) * 1000:.0f} ms, p90 {percentile(commits, 0.9) * 1000:.0f} ms, "
                      f"max {commits[-1] * 1000:.0f} ms; all: {', '.join(f'{v * 1000:.0f}' for v in commits)}")
            print("report ticks, median: began {:.0f} ms after the period end, driver sampling {:.0f} ms, derivation "
                  "{:.0f} ms, report + notification written {:.0f} ms".format(*(value * 1000 for value in breakdown)))
        finally:
            receiver.stop()
            server.terminate()
            server.wait(timeout=30)
            server_log.close()
            if args.keep_log is not None:
                args.keep_log.write_bytes((data_dir / "server.log").read_bytes())


if __name__ == "__main__":
    main()

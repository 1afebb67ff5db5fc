"""Placement benchmark: decisions against 1,000, 10,000 and 100,000 hosts.

Each inventory size runs in its own process (so its RSS is its own): hosts of three shapes in
several zones and two NFVI-PoPs, 15 % aarch64, 20 % with SR-IOV + NUMA + CPU pinning traits, 60 %
NUMA only; requests drawn from vimkit's seeded flavours, 25 % pinned to a zone, 10 % aarch64,
10 % needing SR-IOV, and 30 % carrying an anti-affinity rule (groups of 3-10 members: hard
per-host, soft per-host or hard per-zone). Phases, all single-threaded (the engine serialises
decisions under one lock anyway):

- fill: ``claim`` (decide + record) until the target count is placed — 10 per host at 1,000 and
  10,000 hosts (so 100,000 computes on 10,000 hosts), one per host at 100,000;
- churn: release a random compute and claim a new one, on the filled inventory;
- dry: ``decide`` only, on the filled inventory.

Per phase it prints decisions/s and per-decision latency percentiles (wall clock, and the
thread's CPU time, which other processes on a shared machine cannot inflate), then the process
RSS once the inventory is filled. Garbage collection stays enabled, as in the server.

    .venv/bin/python bench/bench_placement.py                      # both strategies, 3 sizes
    .venv/bin/python bench/bench_placement.py --sizes 10000 --strategy SPREAD
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vimkit.placement import (  # noqa: E402
    AffinityRule,
    HostSpec,
    PlacementConfig,
    PlacementError,
    PlacementRequest,
    PlacementState,
    Strategy,
)

# vimkit's seeded public flavours (vimkit.domain.flavours.DEFAULT_FLAVOURS), repeated here so that
# the benchmark process loads nothing but the placement engine and its RSS is the engine's.
FLAVOURS = ((1, 512, 1), (1, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160), (4, 16384, 100),
            (8, 32768, 200))
SHAPES = ((32, 131072, 1000), (64, 262144, 2000), (96, 524288, 4000))
TRAITS_FULL = frozenset({"HW_NIC_SRIOV", "HW_NUMA_ROOT", "HW_CPU_PINNING"})
TRAITS_NUMA = frozenset({"HW_NUMA_ROOT"})


def zones_for(hosts: int) -> int:
    return {1_000: 4, 10_000: 8}.get(hosts, 16 if hosts >= 100_000 else 4)


def inventory(hosts: int, rng: random.Random) -> list[HostSpec]:
    zones = zones_for(hosts)
    specs = []
    for index in range(hosts):
        zone = index % zones
        vcpus, memory, disk = rng.choice(SHAPES)
        roll = rng.random()
        traits = TRAITS_FULL if roll < 0.2 else TRAITS_NUMA if roll < 0.8 else frozenset()
        specs.append(HostSpec(
            f"host-{index:06d}", f"zone-{zone:02d}", f"pop-{zone % 2}", vcpus, memory, disk,
            reserved_memory_mb=4096, cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0,
            cpu_architecture="aarch64" if rng.random() < 0.15 else "x86_64", traits=traits,
        ))
    return specs


class Requests:
    """An endless, seeded stream of requests with a realistic share of anti-affinity."""

    def __init__(self, zones: int, rng: random.Random) -> None:
        self.zones = zones
        self.rng = rng
        self.group = 0
        self.group_left = 0
        self.group_rule: Callable[[str], AffinityRule] | None = None

    def next(self) -> PlacementRequest:
        rng = self.rng
        vcpus, memory_mb, disk_gb = rng.choice(FLAVOURS)
        rules: tuple[AffinityRule, ...] = ()
        if rng.random() < 0.3:
            if self.group_left == 0:
                self.group += 1
                self.group_left = rng.randint(3, 10)
                kind = rng.random()
                self.group_rule = (
                    (lambda g: AffinityRule("ANTI_AFFINITY", "NFVI_NODE", "HARD", group_id=g)) if kind < 0.7 else  # type: ignore[arg-type]
                    (lambda g: AffinityRule("ANTI_AFFINITY", "NFVI_NODE", "SOFT", group_id=g)) if kind < 0.9 else  # type: ignore[arg-type]
                    (lambda g: AffinityRule("ANTI_AFFINITY", "ZONE", "HARD", group_id=g))  # type: ignore[arg-type]
                )
            self.group_left -= 1
            assert self.group_rule is not None
            rules = (self.group_rule(f"group-{self.group}"),)
        return PlacementRequest(
            vcpus, memory_mb, disk_gb,
            zone_ids=frozenset({f"zone-{rng.randrange(self.zones):02d}"}) if rng.random() < 0.25 else None,
            cpu_architecture="aarch64" if rng.random() < 0.10 else None,
            required_traits=frozenset({"HW_NIC_SRIOV"}) if rng.random() < 0.10 else frozenset(),
            affinity_rules=rules,
        )


def percentile(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000.0


def timed(count: int, step: Callable[[int], bool]) -> dict[str, float]:
    """Run ``step`` ``count`` times; latencies in microseconds, rate per wall second."""
    wall: list[int] = []
    cpu: list[int] = []
    failures = 0
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    started = time.perf_counter()
    for index in range(count):
        w0, c0 = perf(), thread()
        ok = step(index)
        c1, w1 = thread(), perf()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
        failures += not ok
    elapsed = time.perf_counter() - started
    wall.sort()
    cpu.sort()
    return {
        "decisions": count, "failures": failures, "per_second": count / elapsed,
        "p50_us": percentile(wall, 0.50), "p99_us": percentile(wall, 0.99), "p999_us": percentile(wall, 0.999),
        "max_us": wall[-1] / 1000.0, "cpu_p50_us": percentile(cpu, 0.50), "cpu_p99_us": percentile(cpu, 0.99),
    }


def rss_mib() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mib": int(fields["VmRSS"]) / 1024, "peak_rss_mib": int(fields["VmHWM"]) / 1024,
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_one(hosts: int, strategy: str, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    specs = inventory(hosts, rng)
    started = time.perf_counter()
    state = PlacementState(specs, PlacementConfig(strategy=Strategy(strategy)))
    build_s = time.perf_counter() - started
    del specs
    requests = Requests(zones_for(hosts), rng)
    target = hosts * 10 if hosts <= 10_000 else hosts
    placed: list[str] = []

    def claim(index: int, prefix: str = "c") -> bool:
        name = f"{prefix}{index}"
        try:
            state.claim(name, requests.next())
        except PlacementError:
            return False
        placed.append(name)
        return True

    fill = timed(target, claim)
    memory = rss_mib()

    def churn(index: int) -> bool:
        position = rng.randrange(len(placed))
        victim = placed[position]
        placed[position] = placed[-1]
        placed.pop()
        state.release(victim)
        return claim(index, "n")

    churned = timed(min(20_000, target), churn)

    def dry(_index: int) -> bool:
        try:
            state.decide(requests.next())
        except PlacementError:
            return False
        return True

    dry_run = timed(20_000, dry)
    capacity = state.capacity()
    return {
        "hosts": hosts, "strategy": strategy, "zones": zones_for(hosts), "build_s": build_s,
        "placed": len(placed), "vcpu_use": capacity.vcpus.allocated / capacity.vcpus.total,
        "memory_use": capacity.memory_mb.allocated / capacity.memory_mb.total,
        "fill": fill, "churn": churned, "dry": dry_run, **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--strategy", default="both", choices=["SPREAD", "PACK", "both"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.strategy, args.seed)))
        return
    strategies = ["SPREAD", "PACK"] if args.strategy == "both" else [args.strategy]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    header = (f"{'strategy':8} {'hosts':>7} {'zones':>5} {'phase':6} {'decisions':>9} {'fail':>5} {'per s':>8} "
              f"{'p50 µs':>7} {'p99 µs':>7} {'p99.9 µs':>8} {'max µs':>8} {'cpu p99':>7}")
    print(header)
    for strategy in strategies:
        for size in (int(s) for s in args.sizes.split(",")):
            output = subprocess.run([sys.executable, __file__, "--one", str(size), "--strategy", strategy,
                                     "--seed", str(args.seed)], check=True, capture_output=True, text=True).stdout
            result = json.loads(output)
            for phase in ("fill", "churn", "dry"):
                row = result[phase]
                print(f"{strategy:8} {size:>7} {result['zones']:>5} {phase:6} {row['decisions']:>9} "
                      f"{row['failures']:>5} "
                      f"{row['per_second']:>8.0f} {row['p50_us']:>7.1f} {row['p99_us']:>7.1f} {row['p999_us']:>8.1f} "
                      f"{row['max_us']:>8.0f} {row['cpu_p99_us']:>7.1f}")
            print(f"{'':8} {size:>7} build {result['build_s']:.2f} s; {result['placed']} computes placed "
                  f"(vCPU {result['vcpu_use']:.0%}, memory {result['memory_use']:.0%} allocated); "
                  f"RSS {result['rss_mib']:.0f} MiB (peak {result['peak_rss_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()

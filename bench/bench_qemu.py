"""QEMU backend benchmark: POST→ALLOCATED for 1 and for 3 concurrent computes, and the VIM's own
overhead on top of QEMU's boot.

Starts ``vimkit serve --driver qemu`` (TCG here; SQLite in a temporary data directory) with the
test guest of ``scripts/build-test-guest.sh``, makes a VXLAN network with a subnet, then allocates
``m1.tiny`` computes with one NIC each with ``Prefer: wait`` and times each POST until its answer
(ALLOCATED). The driver records, per VM, the time from launching QEMU to the guest's ready marker
on the serial console (``boot_seconds`` in its state file), the time spent waiting for a boot slot
(``queue_seconds``: at most one TCG boot per CPU, so the third of three waits for another guest's
boot) and its own preparation (``prepare_seconds``: taps, config drive, root disk, concurrently).

The VIM's overhead is POST→ALLOCATED minus the boot and the queueing. What "boot" includes, so
that the figure is read rightly: QEMU's start (``nsenter``, ``nice``, QEMU's own initialisation
and kernel loading) and the VIM's latency in noticing the marker (it reads the serial log every
20 ms) are in it; everything else the VIM does — API, database, scheduling, ports, the driver's
preparation, the answer — is overhead. For comparison the table also shows the uptime the guest
itself printed with its marker (its clock starts only once its kernel runs). The overhead is split
with wall-clock marks the driver records (``marks``): API before the driver, the driver until
its boot slot (of which each preparation step, from the start of the preparation), the driver
after the marker and the API after the driver.
Needs root, qemu-system-x86 and the guest (built on first use into ~/.cache/vimkit/test-guest).

    .venv/bin/python bench/bench_qemu.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import ADMIN, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GUEST = Path(os.environ.get("VIMKIT_TEST_GUEST_DIR", Path.home() / ".cache" / "vimkit" / "test-guest"))


def allocate(api: httpx.Client, network_id: str, name: str) -> tuple[str, float, float, float]:
    """(compute id, POST→ALLOCATED seconds, wall clock of the POST, wall clock of the answer)."""
    posted = time.time()
    started = time.perf_counter()
    response = api.post("/compute/v1/computes", headers={"Prefer": "wait=300"}, json={
        "computeFlavourId": "m1.tiny", "computeName": name, "interfaceData": [{"networkId": network_id}]})
    response.raise_for_status()
    body = response.json()
    # The server caps Prefer: wait (60 s by default): a boot queued behind others is then polled.
    while body["provisioningState"] == "ALLOCATING":
        time.sleep(0.02)
        body = api.get(f"/compute/v1/computes/{body['computeId']}").json()
    elapsed = time.perf_counter() - started
    if body["provisioningState"] != "ALLOCATED":
        raise RuntimeError(f"{name}: {body['provisioningState']} {body.get('error')}")
    return body["computeId"], elapsed, posted, posted + elapsed


def phases(data_dir: Path, compute_id: str) -> tuple[float, float, float, dict[str, float]]:
    """(boot, queue, prepare, wall-clock marks) of the compute's last boot, from the driver's state file."""
    vm = json.loads((data_dir / "qemu" / "qemu-state.json").read_text())["vms"][compute_id]
    return (float(vm["boot_seconds"]), float(vm.get("queue_seconds") or 0), float(vm.get("prepare_seconds") or 0),
            vm.get("marks") or {})


#: Where the overhead goes: (label, from mark, to mark); "posted"/"answered" are the client's.
SPLIT = (("API before the driver", "posted", "entered"), ("driver before its boot slot", "entered", "prepared"),
         ("of which taps", "preparing", "taps"), ("config drive", "preparing", "drive"),
         ("root disk", "preparing", "root"),
         ("driver after the marker", "ready", "returned"), ("API after the driver", "returned", "answered"))


def guest_uptime(data_dir: Path, compute_id: str) -> float | None:
    """The uptime the guest printed with its ready marker (``VIMKIT-READY <id> <uptime>``)."""
    try:
        log = (data_dir / "qemu" / "vms" / compute_id / "serial.log").read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(log.splitlines()):
        fields = line.split()
        if len(fields) >= 3 and fields[0].endswith("VIMKIT-READY") and fields[1] == compute_id:
            try:
                return float(fields[2])
            except ValueError:
                return None
    return None


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("vimkit-")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of each scenario")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "build-test-guest.sh"), str(GUEST)], check=True, capture_output=True)
    before = namespaces()
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-qemu-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_QEMU_GUEST_DIR": str(GUEST), "VIMKIT_QEMU_ACCEL": "tcg",
               "VIMKIT_QEMU_BOOT_TIMEOUT": "300"}
        server = subprocess.Popen([sys.executable, "-m", "vimkit.cli.main", "serve", "--driver", "qemu",
                                   "--port", str(port), "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600) as api:
                network = api.post("/network/v1/networks", json={"networkResourceName": "bench", "networkType": "vxlan"})
                network.raise_for_status()
                network_id = network.json()["networkResourceId"]
                api.post("/network/v1/subnets", json={"networkId": network_id, "cidr": "10.42.0.0/24",
                                                      "ipVersion": "IPv4"}).raise_for_status()
                print("vimkit QEMU benchmark: TCG, m1.tiny with one NIC each, Prefer: wait; times in seconds")
                print("| scenario | POST→ALLOCATED (each) | QEMU launch→ready marker (guest's own uptime) "
                      "| waiting for a boot slot | VIM overhead per compute (of which driver preparation) |")
                print("|---|---|---|---|---|")
                overall, splits = [], {label: [] for label, _, _ in SPLIT}
                for concurrent in (1, 3):
                    for round_ in range(args.rounds):
                        names = [f"bench-{concurrent}-{round_}-{i}" for i in range(concurrent)]
                        with ThreadPoolExecutor(max_workers=concurrent) as pool:
                            results = list(pool.map(lambda n: allocate(api, network_id, n), names))
                        measured = [phases(data_dir, compute_id) for compute_id, *_ in results]
                        walls = [wall for _, wall, _, _ in results]
                        overheads = [wall - boot - queue for wall, (boot, queue, _, _) in zip(walls, measured)]
                        overall += overheads
                        uptimes = [guest_uptime(data_dir, compute_id) or "?" for compute_id, *_ in results]
                        for (_, _, posted, answered), (_, _, _, marks) in zip(results, measured):
                            marks = {**marks, "posted": posted, "answered": answered}
                            for label, start, end in SPLIT:
                                if start in marks and end in marks:
                                    splits[label].append(marks[end] - marks[start])
                        print(f"| {concurrent} at once, round {round_ + 1} | "
                              f"{', '.join(f'{w:.2f}' for w in walls)} | "
                              f"{', '.join(f'{b:.2f} ({u})' for (b, _, _, _), u in zip(measured, uptimes))} | "
                              f"{', '.join(f'{q:.2f}' for _, q, _, _ in measured)} | "
                              f"{', '.join(f'{o * 1000:.0f} ms ({p * 1000:.0f})' for o, (_, _, p, _) in zip(overheads, measured))} "
                              f"(median {statistics.median(overheads) * 1000:.0f} ms) |")
                        for compute_id, *_ in results:
                            api.delete(f"/compute/v1/computes/{compute_id}", headers={"Prefer": "wait=120"})
                print(f"VIM overhead over all computes: median {statistics.median(overall) * 1000:.0f} ms, "
                      f"max {max(overall) * 1000:.0f} ms")
                print("where it goes (median / max over all computes, ms): " + "; ".join(
                    f"{label} {statistics.median(v) * 1000:.0f} / {max(v) * 1000:.0f}"
                    for label, v in splits.items() if v))
        finally:
            server.terminate()
            server.wait(timeout=60)
            # VMs outlive the VIM (-daemonize): a run that failed half-way leaves some behind.
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and str(data_dir).encode() in (proc / "cmdline").read_bytes():
                        os.kill(int(proc.name), 9)
                except OSError:
                    pass
            # The driver keeps its namespace across restarts (VMs survive the VIM); this run's goes.
            for name in namespaces() - before:
                subprocess.run(["ip", "netns", "delete", name], check=False)


if __name__ == "__main__":
    main()

"""Compute benchmark: Allocate throughput, POST→ALLOCATED time, and queries over 100,000 computes.

Starts ``vimkit serve`` as a separate process (SQLite in a temporary data directory, or the
database given with --database-url) on the simulated infrastructure **without artificial driver
latency** (``VIMKIT_SIM_LATENCY_SCALE=0``, as the issue asks) and an inventory of 2 zones × 250
hosts, then drives it with concurrent keep-alive HTTP/1.1 clients:

1. ``POST /compute/v1/computes`` (m1.tiny) answered at once with ``ALLOCATING``: sustained
   requests/s and response latency;
2. the same with ``Prefer: wait=30``: each answer arrives when the compute is ``ALLOCATED``, so
   its latency is the time from POST to ALLOCATED — at --concurrency, then with the fewer connections
   (below saturation: the time a compute takes rather than the time it queues);
3. the same at fixed arrival rates (``--rates``, wrk only): one request every 1/rate s whatever
   the answers do, as a CCM's requests arrive, with the sends a free connection took late counted;
4. GET one compute and filtered lists (by name, by zone with a page of 100, by metadata) with
   ``--stored`` computes in the database (default 100,000; rows are inserted directly in bulk
   before the server starts, since only the queries are measured here).

Each row also gives the server's CPU time (user + system, from ``/proc``) per request, which a
shared machine's load moves far less than requests per second.

    .venv/bin/python bench/bench_compute.py [--seconds 10] [--concurrency 16] [--stored 100000] [--rates 400,500]
        [--rate-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_storage import ADMIN, drive, free_port, report  # noqa: E402

INVENTORY = """\
[[nfviPops]]
nfviPopId = "pop-1"
""" + "".join(f"""
[[zones]]
zoneId = "zone-{z}"
zoneName = "Zone {z}"
nfviPopId = "pop-1"

[[hostGroups]]
namePattern = "zone-{z}-host-{{index:03d}}"
count = 250
zoneId = "zone-{z}"
vcpus = 64
memoryMb = 262144
diskGb = 4000
""" for z in "ab")


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local path = string.gsub(template, "{n}", string.format("%06d", (counter * 7919) % count))
  local payload = string.gsub(body, "{n}", tostring(counter))
  if payload == "" then
    return wrk.format(method, path, extra)
  end
  return wrk.format(method, path, extra, payload)
end
done = function(summary, latency, requests)
  local late, latest = 0, 0
  if threads then late, latest = threads[1]:get("late"), threads[1]:get("latest") end
  io.write(string.format("RESULT %d %d %f %f %d %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99), late, latest))
end
"""


# Open loop: requests leave at a fixed rate whatever the answers do (one slot every 1/rate s,
# taken by whichever connection is free), as a CCM's requests arrive; a closed loop of N
# connections instead measures the queue its own N requests make. The slots a free connection
# took late are counted: with none late, wrk's latency (from the send) is the whole latency.
WRK_RATE_SCRIPT = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } vk_timespec; int clock_gettime(int, vk_timespec *); ]]
local clock = ffi.new("vk_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
interval = 1000 / rate
next_slot = nil
late = 0
latest = 0
delay = function()
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  local slot = next_slot
  next_slot = next_slot + interval
  if slot < now - 1 then
    late = late + 1
    if now - slot > latest then latest = now - slot end
  end
  if slot <= now then return 0 end
  return math.floor(slot - now + 0.5)
end
threads = {}
setup = function(thread) table.insert(threads, thread) end
"""

SERVER_PID: int | None = None


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of a process so far (per request, it moves far less with a shared
    machine's load than requests per second do); ``pid`` may also be ``self/task/<tid>``, a
    thread of this process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> list[int]:
    """The machine's CPU time by state (``/proc/stat``: user, nice, system, idle, iowait, irq,
    softirq, steal)."""
    return [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def drive_wrk(base_url: str, token: str, name: str, method: str, template: str, body: str, seconds: float,
              connections: int, workdir: Path, count: int = 1, prefer: str | None = None,
              rate: float | None = None) -> None:
    """One scenario with wrk (C, one thread), so that the load generator does not starve the server
    of the CPU an httpx client would take on this 2-core machine; prints a table row. With ``rate``
    the requests leave at that many per second (open loop, see WRK_RATE_SCRIPT)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if prefer:
        headers["Prefer"] = prefer
    extra = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    script = workdir / "bench.lua"
    escaped = body.replace('"', '\\"')
    script.write_text(f'method = "{method}"\ntemplate = "{template}"\ncount = {count}\nbody = "{escaped}"\n'
                      f"extra = {extra}\n" + (f"rate = {rate}\n" + WRK_RATE_SCRIPT if rate else "") + WRK_SCRIPT)
    cpu_before = cpu_seconds(SERVER_PID) if SERVER_PID else 0.0
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script), base_url],
                            capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(SERVER_PID) - cpu_before if SERVER_PID else 0.0
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+) ([\d.]+)", output)
    achieved = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert match and achieved, output
    if rate:
        name += f" (offered {rate:,.0f}/s; {match.group(5)} sent > 1 ms late, at most {float(match.group(6)):.0f} ms)"
    print(f"| {name} | {connections} | {float(achieved.group(1)):,.0f} | {float(match.group(3)) / 1000:.1f} ms | "
          f"{float(match.group(4)) / 1000:.1f} ms | {match.group(1)} | {match.group(2)} | "
          f"{1000 * cpu / max(int(match.group(1)), 1):.2f} ms |")


def run_wrk(base_url: str, token: str, seconds: float, concurrency: int, stored: int, workdir: Path,
            sweep: list[int], rates: list[float], rate_seconds: float | None = None) -> None:
    print("| scenario | connections | requests/s | p50 | p99 | requests | errors | server CPU per request |")
    print("|---|---|---|---|---|---|---|---|")
    drive_wrk(base_url, token, "baseline: GET one flavour (same server, same run)", "GET",
              "/compute/v1/flavours/m1.tiny", "", seconds, concurrency, workdir)
    drive_wrk(base_url, token, "Allocate `POST /compute/v1/computes` → 201 ALLOCATING", "POST",
              "/compute/v1/computes", '{"computeFlavourId": "m1.tiny", "computeName": "wrk-{n}"}',
              seconds, concurrency, workdir)
    time.sleep(2)
    drive_wrk(base_url, token, "Allocate with `Prefer: wait` → 201 ALLOCATED (POST→ALLOCATED)", "POST",
              "/compute/v1/computes", '{"computeFlavourId": "m1.tiny", "computeName": "wrk-wait-{n}"}',
              seconds, concurrency, workdir, prefer="wait=30")
    # The same below saturation, load rising: with N connections each waiting for its compute,
    # the rate is what the server sustains at that concurrency and the latency is the time a
    # compute takes plus the time it queues behind the N - 1 others.
    for connections in sweep:
        drive_wrk(base_url, token, "Allocate with `Prefer: wait`, below saturation (POST→ALLOCATED)", "POST",
                  "/compute/v1/computes", '{"computeFlavourId": "m1.tiny", "computeName": "wrk-light-{n}"}',
                  seconds, connections, workdir, prefer="wait=30")
    # At a fixed arrival rate: what a CCM sending that many allocations per second waits for each.
    for rate in rates:
        drive_wrk(base_url, token, "Allocate with `Prefer: wait` at a fixed rate (POST→ALLOCATED)", "POST",
                  "/compute/v1/computes", '{"computeFlavourId": "m1.tiny", "computeName": "wrk-rate-{n}"}',
                  rate_seconds or seconds, 64, workdir, prefer="wait=30", rate=rate)
    if not stored:
        return
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        known = client.get("/compute/v1/computes", params={"filter": "(eq,computeName,stored-000042)"}).json()
    drive_wrk(base_url, token, f"GET one compute ({stored:,} stored)", "GET",
              f"/compute/v1/computes/{known[0]['computeId']}", "", seconds, concurrency, workdir)
    drive_wrk(base_url, token, "list filtered by computeName (indexed column)", "GET",
              "/compute/v1/computes?filter=(eq,computeName,stored-{n})", "", seconds, concurrency, workdir,
              count=stored)
    drive_wrk(base_url, token, "list filtered by zoneId, first page of 100", "GET",
              "/compute/v1/computes?filter=(eq,zoneId,zone-a)", "", seconds, concurrency, workdir)
    drive_wrk(base_url, token, "list filtered by metadata/cluster (metadata index)", "GET",
              "/compute/v1/computes?filter=(eq,metadata/cluster,c17)", "", seconds, concurrency, workdir)


def seed(database_url: str, count: int, group: str) -> None:
    """Insert ``count`` ALLOCATED compute documents of resource group ``group`` in bulk, with their
    ``compute_metadata`` index rows (as the server writes them)."""
    from sqlalchemy import insert

    from vimkit.store.compute_tables import COMPUTE_METADATA, ComputeMetadataRow, ComputeRow
    from vimkit.store.db import Database
    from vimkit.store.migrate import upgrade
    from vimkit.store.repository import utcnow

    database = Database(database_url)
    upgrade(database)
    rng = random.Random(7)
    now = utcnow()
    batch: list[dict] = []

    def flush(session) -> None:  # type: ignore[no-untyped-def]
        # seq comes from the database (a PostgreSQL sequence must advance past the seeded rows)
        inserted = session.execute(insert(ComputeRow).returning(ComputeRow.seq, ComputeRow.id,
                                                                sort_by_parameter_order=True), batch).all()
        metadata = {row["id"]: row["body"]["metadata"] for row in batch}
        entries = COMPUTE_METADATA.rows((seq, metadata[compute_id]) for seq, compute_id in inserted)
        if entries:
            session.execute(insert(ComputeMetadataRow), entries)
        batch.clear()

    with database.write() as session:
        for index in range(count):
            zone = "zone-a" if index % 2 else "zone-b"
            host = f"{zone}-host-{rng.randrange(1, 251):03d}"
            compute_id = str(uuid.UUID(int=rng.getrandbits(128)))
            name = f"stored-{index:06d}"
            body = {"computeId": compute_id, "computeName": name, "flavourId": "m1.tiny",
                    "accelerationCapability": [], "virtualCpu": {"numVirtualCpu": 1},
                    "virtualMemory": {"virtualMemSize": 512}, "virtualNetworkInterface": [], "virtualDisks": [],
                    "zoneId": zone, "hostId": host, "operationalState": "ENABLED",
                    "metadata": {"cluster": f"c{index % 500}", "role": "worker" if index % 10 else "control"},
                    "resourceGroupId": group, "provisioningState": "ALLOCATED", "runningState": "RUNNING",
                    "snapshots": [], "affinityOrAntiAffinityConstraints": []}
            batch.append({"id": compute_id, "resource_group_id": group, "created_at": now, "updated_at": now,
                          "version": 1, "body": body, "compute_name": name, "host_id": host, "zone_id": zone,
                          "state": "ALLOCATED"})
            if len(batch) == 5000:
                flush(session)
        if batch:
            flush(session)
    database.dispose()


async def run(base_url: str, token: str, seconds: float, concurrency: int, stored: int) -> None:
    async def allocate(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.post("/compute/v1/computes", json={"computeFlavourId": "m1.tiny",
                                                                "computeName": f"bench-{index}"})

    async def allocate_wait(client: httpx.AsyncClient, index: int) -> httpx.Response:
        response = await client.post("/compute/v1/computes", headers={"Prefer": "wait=30"},
                                     json={"computeFlavourId": "m1.tiny", "computeName": f"bench-wait-{index}"})
        if response.status_code == 201 and response.json()["provisioningState"] != "ALLOCATED":
            return httpx.Response(599)
        return response

    async def flavour(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get("/compute/v1/flavours/m1.tiny")

    print("| scenario | connections | requests/s | p50 | p99 | requests | errors | server CPU per request |")
    print("|---|---|---|---|---|---|---|---|")
    report("baseline: GET one flavour (same server, same run)",
           await drive(base_url, token, seconds, concurrency, flavour, 200))
    report("Allocate `POST /compute/v1/computes` → 201 ALLOCATING",
           await drive(base_url, token, seconds, concurrency, allocate, 201))
    await asyncio.sleep(2)  # let the background completions of the first scenario drain
    report("Allocate with `Prefer: wait` → 201 ALLOCATED (POST→ALLOCATED)",
           await drive(base_url, token, seconds, concurrency, allocate_wait, 201))

    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        page = (await client.get("/compute/v1/computes", params={"filter": "(eq,computeName,stored-000042)"})).json()
        known = page[0]["computeId"] if page else None
    if known is None:
        print("(no stored computes: run with --stored N to measure queries over N computes)")
        return
    rng = random.Random(3)

    async def get_one(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get(f"/compute/v1/computes/{known}")

    async def by_name(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get("/compute/v1/computes",
                                params={"filter": f"(eq,computeName,stored-{rng.randrange(stored):06d})"})

    async def by_zone(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get("/compute/v1/computes", params={"filter": "(eq,zoneId,zone-a)"})

    async def by_metadata(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get("/compute/v1/computes",
                                params={"filter": f"(eq,metadata/cluster,c{rng.randrange(500)})"})

    report(f"GET one compute ({stored:,} stored)", await drive(base_url, token, seconds, concurrency, get_one, 200))
    report("list filtered by computeName (indexed column)", await drive(base_url, token, seconds, concurrency,
                                                                        by_name, 200))
    report("list filtered by zoneId, first page of 100", await drive(base_url, token, seconds, concurrency,
                                                                     by_zone, 200))
    report("list filtered by metadata/cluster (metadata index, 200 matches → 2 pages)",
           await drive(base_url, token, seconds, concurrency, by_metadata, 200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--sweep", default="2,4,8",
                        help="connection counts for the POST→ALLOCATED rows below saturation (wrk only)")
    parser.add_argument("--rates", default="400,500",
                        help="arrival rates (allocations/s) for the open-loop POST→ALLOCATED rows (wrk only)")
    parser.add_argument("--rate-seconds", type=float, default=None,
                        help="seconds per fixed-rate row (default --seconds): a sustained rate")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--python-client", action="store_true", help="use httpx even when wrk is installed")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-compute-") as tmp:
        data_dir = Path(tmp)
        database_url = args.database_url or f"sqlite:///{data_dir / 'vimkit.db'}"
        inventory = data_dir / "inventory.toml"
        inventory.write_text(INVENTORY)
        group = "rg-bench"
        if args.stored:
            started = time.perf_counter()
            seed(database_url, args.stored, group)
            print(f"(seeded {args.stored:,} computes in {time.perf_counter() - started:.1f} s)")
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_SIM_LATENCY_SCALE": "0",
               "VIMKIT_INVENTORY_FILE": str(inventory)}
        command = [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir),
                   "--database-url", database_url]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        global SERVER_PID
        SERVER_PID = server.pid
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base_url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            token = httpx.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as admin:
                # The stored computes belong to a consumer of their own; the admin sees every group.
                admin.post("/admin/v1/consumers", json={"consumerName": "bench", "resourceGroupId": group,
                                                        "scopes": ["compute:read"]})
            print(f"vimkit compute benchmark: {args.concurrency} concurrent connections, {args.seconds:.0f} s per "
                  f"scenario, database {args.database_url or 'sqlite'}, simulated infrastructure without latency, "
                  f"load from {'wrk' if use_wrk else 'httpx'}")
            ticks = machine_ticks()
            if use_wrk:
                run_wrk(base_url, token, args.seconds, args.concurrency, args.stored, data_dir,
                        [int(n) for n in args.sweep.split(",") if n.strip()],
                        [float(n) for n in args.rates.split(",") if n.strip()], args.rate_seconds)
            else:
                asyncio.run(run(base_url, token, args.seconds, args.concurrency, args.stored))
            spent = [after - before for before, after in zip(ticks, machine_ticks())]
            # Steal: time this virtual machine was ready to run but the host ran something else.
            print(f"(machine CPU over the scenarios: {100 * (1 - spent[3] / max(sum(spent), 1)):.0f} % busy, "
                  f"{100 * spent[7] / max(sum(spent), 1):.0f} % stolen by the host)")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

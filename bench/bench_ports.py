"""Port creation throughput through HTTP: ``POST /network/v1/ports`` against ``vimkit serve``.

Starts ``vimkit serve`` as a separate process (SQLite in a temporary data directory, or the
database given with --database-url; the simulated driver with its default latencies unless
--latency-scale says otherwise), creates one network with an IPv4 /16 subnet, then creates ports
for --seconds (wrk) or --ports of them (httpx) from --concurrency concurrent keep-alive
connections and prints ports/s, p50 and p99. The load comes from wrk (C, one thread) when it is installed: an httpx client in Python
needs about as much CPU per request as the server, and on a 2-core machine it capped the
figure. Afterwards every port is read back through the API: all ``ALLOCATED``, none missing, no
address or MAC given twice.

    apt-get install -y wrk   # the load generator; without it (or with --python-client) httpx is used
    .venv/bin/python bench/bench_ports.py [--seconds 10 | --python-client --ports 3000] [--concurrency 32]
                                          [--latency-scale 1.0] [--no-sim-persistence] [--no-baseline]

With wrk, ``GET`` of the network is then measured the same way (same server, same run): on a
shared machine the ratio of the two holds where absolute figures move.

``--no-sim-persistence`` runs the same server (built by this script instead of ``vimkit serve``)
with the simulator keeping its state in memory only (no state file written at all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ADMIN = ("bench-admin", "bench-admin-secret-0123456789")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: per request, a figure that a shared machine's
    load moves far less than requests per second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_ports(base_url: str, token: str, network_id: str, count: int, concurrency: int) -> dict:
    latencies: list[float] = []
    answers: list[dict] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                 limits=limits, timeout=60) as client:
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post("/network/v1/ports", json={"networkId": network_id})
                latencies.append(time.perf_counter() - started)
                if response.status_code == 201:
                    answers.append(response.json())
                else:
                    errors.append(response.text[:200])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    addresses = [ip["ipAddress"] for port in answers for ip in port["fixedIps"]]
    macs = [port["macAddress"] for port in answers]
    return {
        "answered": len(answers) + len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "unique": len(set(addresses)) == len(addresses) == len(answers) and len(set(macs)) == len(macs),
        "ports_per_s": len(answers) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
        "seconds": elapsed,
    }


WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
WRK_POST = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n' + WRK_DONE


def drive_wrk(url: str, token: str, seconds: int, concurrency: int, script: Path) -> dict:
    """wrk runs for a duration (it cannot stop after a number of answers)."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script),
         "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", output)
    assert match, output
    requests, elapsed = int(match.group(1)), int(match.group(2)) / 1e6
    return {"answered": requests, "errors": int(match.group(3)), "ports_per_s": requests / elapsed,
            "p50_ms": float(match.group(4)) / 1000, "p99_ms": float(match.group(5)) / 1000,
            "seconds": elapsed, "first_error": None}


def check_ports(api: httpx.Client) -> dict:
    """Every port through the API, page by page: how many, all ALLOCATED, addresses and MACs distinct."""
    ports: list[dict] = []
    url: str | None = "/network/v1/ports"
    while url:
        page = api.get(url)
        page.raise_for_status()
        ports += page.json()
        url = page.links.get("next", {}).get("url")
    addresses = [ip["ipAddress"] for port in ports for ip in port["fixedIps"]]
    macs = [port["macAddress"] for port in ports]
    return {"stored": len(ports), "allocated": all(p["provisioningState"] == "ALLOCATED" for p in ports),
            "unique": len(set(addresses)) == len(addresses) == len(ports) and len(set(macs)) == len(macs)}


def serve_in_memory_sim(port: int, data_dir: Path, database_url: str | None) -> None:
    """``vimkit serve`` with the simulator's state file switched off (bench-only mode)."""
    import dataclasses

    import uvicorn

    from vimkit.app import build_services, create_app
    from vimkit.config import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url, port=port, log_level="warning")
    services = build_services(settings)
    driver = services.infrastructure.driver  # type: ignore[union-attr]
    driver.config = dataclasses.replace(driver.config, state_dir=None)
    app = create_app(settings, services)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-in-memory-sim":
        serve_in_memory_sim(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=3000, help="ports to create (httpx client)")
    parser.add_argument("--seconds", type=int, default=10, help="how long wrk creates ports")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-scale", type=float, default=1.0,
                        help="simulated driver latency multiplier (1 = default latencies, 0 = none)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-sim-persistence", action="store_true",
                        help="keep the simulator's state in memory (no state file rewritten per operation)")
    parser.add_argument("--python-client", action="store_true", help="use httpx even when wrk is installed")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the GET of one network measured with wrk after the ports, for comparison")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vimkit-bench-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_SIM_LATENCY_SCALE": str(args.latency_scale)}
        command = [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if args.database_url:
            command += ["--database-url", args.database_url]
        if args.no_sim_persistence:
            command = [sys.executable, __file__, "--serve-in-memory-sim", str(port), str(data_dir),
                       *([args.database_url] if args.database_url else [])]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base_url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            token = httpx.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
                network = api.post("/network/v1/networks", json={"networkResourceName": "bench"})
                network.raise_for_status()
                network_id = network.json()["networkResourceId"]
                api.post("/network/v1/subnets", json={"networkId": network_id, "ipVersion": "IPv4",
                                                      "cidr": "10.128.0.0/16"}).raise_for_status()
            use_wrk = shutil.which("wrk") is not None and not args.python_client
            if use_wrk:
                script = data_dir / "ports.lua"
                script.write_text(f"wrk.body = '{{\"networkId\": \"{network_id}\"}}'\n" + WRK_POST)
                cpu_before = cpu_seconds(server.pid)
                result = drive_wrk(f"{base_url}/network/v1/ports", token, args.seconds, args.concurrency, script)
            else:
                cpu_before = cpu_seconds(server.pid)
                result = asyncio.run(create_ports(base_url, token, network_id, args.ports, args.concurrency))
            server_cpu = cpu_seconds(server.pid) - cpu_before
            with httpx.Client(base_url=base_url, headers=headers, timeout=60) as api:
                time.sleep(1)  # requests wrk left in flight when it stopped
                stored = check_ports(api)
            print(f"{f'seconds={args.seconds}' if use_wrk else f'ports={args.ports}'} concurrency={args.concurrency} latency_scale={args.latency_scale} "
                  f"database={'sqlite' if not args.database_url else args.database_url.split(':')[0]} "
                  f"sim_persistence={not args.no_sim_persistence} load={'wrk' if use_wrk else 'httpx'}")
            print(f"{result['answered']} answers in {result['seconds']:.2f} s: "
                  f"{result['ports_per_s']:.0f} ports/s, p50 {result['p50_ms']:.1f} ms, "
                  f"p99 {result['p99_ms']:.1f} ms, errors {result['errors']}; "
                  f"{stored['stored']} ports stored, all ALLOCATED: {stored['allocated']}, "
                  f"addresses and MACs unique: {stored['unique']}")
            print(f"server CPU: {1000 * server_cpu / max(result['answered'], 1):.2f} ms per port, "
                  f"{100 * server_cpu / result['seconds']:.0f} % of one core")
            if result["first_error"]:
                print("first error:", result["first_error"])
            if use_wrk and not args.no_baseline:
                script = data_dir / "get.lua"
                script.write_text(WRK_DONE)
                baseline = drive_wrk(f"{base_url}/network/v1/networks/{network_id}", token, args.seconds,
                                     args.concurrency, script)
                print(f"baseline, GET one network in the same server: {baseline['ports_per_s']:.0f} requests/s, "
                      f"p50 {baseline['p50_ms']:.1f} ms, p99 {baseline['p99_ms']:.1f} ms, "
                      f"errors {baseline['errors']}")
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()

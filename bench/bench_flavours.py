"""Flavour read benchmark: GET one and a filtered list over 10,000 flavours, real HTTP on loopback.

Starts ``vimkit serve`` as a separate process (SQLite in a temporary data directory, or the
database given with --database-url), loads the flavours through the store, then drives the server
with concurrent HTTP/1.1 keep-alive clients and prints requests/s, p50 and p99 per scenario.
It also times token verification in this process, the figure issue 3 asks to compare with GET.

    apt-get install -y wrk   # the load generator (C); without it an httpx client is used
    .venv/bin/python bench/bench_flavours.py [--flavours 10000] [--seconds 10] [--concurrency 8]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_flavours(data_dir: Path, database_url: str | None, count: int) -> None:
    """Insert ``count`` flavours in bulk through the store models (the setup, not what is timed)."""
    from vimkit.app import build_services
    from vimkit.config import Settings
    from vimkit.store.models import FlavourRow
    from vimkit.store.repository import utcnow

    settings = Settings(data_dir=data_dir, database_url=database_url, admin_client_id=ADMIN[0],
                        admin_client_secret=ADMIN[1])
    services = build_services(settings)
    now = utcnow()
    with services.database.write() as session:
        for index in range(count):
            flavour_id = f"bench-{index:05d}"
            session.add(FlavourRow(
                id=flavour_id, resource_group_id="system", is_public=True, created_at=now, updated_at=now,
                version=1,
                body={"flavourId": flavour_id, "isPublic": True, "accelerationCapability": [],
                      "virtualCpu": {"numVirtualCpu": 1 + index % 64},
                      "virtualMemory": {"virtualMemSize": 512 * (1 + index % 128)},
                      "storageAttributes": [], "virtualNetworkInterface": [],
                      "metadata": {"tier": ("gold", "silver", "bronze")[index % 3]}},
            ))
    services.close()


async def drive(base_url: str, token: str, path_for, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                 limits=limits, timeout=30) as client:

        async def worker(worker_id: int) -> None:
            nonlocal errors
            i = worker_id
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(path_for(i))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local path = string.gsub(template, "{n}", string.format("%05d", (counter * 7919) % count))
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def drive_wrk(base_url: str, token: str, template: str, count: int, seconds: float, connections: int,
              workdir: Path) -> dict[str, float]:
    """Drive the server with wrk (C, one thread) so the load generator does not starve the server."""
    script = workdir / "bench.lua"
    script.write_text(f'template = "{template}"\ncount = {count}\n' + WRK_SCRIPT)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script),
         "-H", f"Authorization: Bearer {token}", base_url],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)", output)
    seconds_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert match and seconds_match, output
    return {
        "requests": int(match.group(1)),
        "errors": int(match.group(2)),
        "rps": float(seconds_match.group(1)),
        "p50_ms": float(match.group(3)) / 1000,
        "p99_ms": float(match.group(4)) / 1000,
    }


def token_verification_cost(data_dir: Path, token: str, rounds: int = 20000) -> tuple[float, float]:
    """Microseconds per verification: cached (the steady state) and a cold decode."""
    from vimkit.auth.keys import KeyStore
    from vimkit.auth.tokens import TokenService

    service = TokenService(KeyStore(data_dir, 3660), issuer="vimkit", audience="vimkit", lifetime_seconds=3600)
    started = time.perf_counter()
    for _ in range(200):
        service._decode(token)
    cold = (time.perf_counter() - started) / 200 * 1e6
    service.verify(token)
    started = time.perf_counter()
    for _ in range(rounds):
        service.verify(token)
    cached = (time.perf_counter() - started) / rounds * 1e6
    return cached, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flavours", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--python-client", action="store_true", help="use httpx even when wrk is installed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vimkit-bench-") as tmp:
        data_dir = Path(tmp)
        load_flavours(data_dir, args.database_url, args.flavours)
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning"}
        command = [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if args.database_url:
            command += ["--database-url", args.database_url]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base_url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            token = httpx.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            n = args.flavours
            scenarios = {
                "GET /compute/v1/flavours/{id}": "/compute/v1/flavours/bench-{n}",
                "GET /compute/v1/flavours?filter=(eq,metadata/tier,gold);(gte,virtualCpu/numVirtualCpu,60)":
                    "/compute/v1/flavours?filter=(eq,metadata/tier,gold);(gte,virtualCpu/numVirtualCpu,60)",
                "GET /compute/v1/flavours?filter=(eq,flavourId,<id>)":
                    "/compute/v1/flavours?filter=(eq,flavourId,bench-{n})",
            }
            use_wrk = shutil.which("wrk") is not None and not args.python_client
            print(f"vimkit flavour benchmark: {n} flavours, {args.concurrency} concurrent connections, "
                  f"{args.seconds:.0f} s per scenario, database {args.database_url or 'sqlite'}, "
                  f"load from {'wrk' if use_wrk else 'httpx'}")
            results = {}
            for name, template in scenarios.items():
                if use_wrk:
                    drive_wrk(base_url, token, template, n, 1, args.concurrency, data_dir)  # warm-up
                    results[name] = drive_wrk(base_url, token, template, n, args.seconds, args.concurrency, data_dir)
                else:
                    path_for = (lambda t: lambda i: t.replace("{n}", f"{(i * 7919) % n:05d}"))(template)
                    asyncio.run(drive(base_url, token, path_for, 1.0, args.concurrency))  # warm-up
                    results[name] = asyncio.run(drive(base_url, token, path_for, args.seconds, args.concurrency))
            for name, result in results.items():
                print(f"{name}\n    {result['rps']:8.0f} req/s   p50 {result['p50_ms']:6.2f} ms   "
                      f"p99 {result['p99_ms']:6.2f} ms   ({result['requests']} requests, {result['errors']} errors)")
            cached, cold = token_verification_cost(data_dir, token)
            get_one = results["GET /compute/v1/flavours/{id}"]
            per_request_us = 1e6 / get_one["rps"]
            print(f"token verification: {cached:.1f} us cached, {cold:.1f} us cold decode; "
                  f"GET one costs {per_request_us:.0f} us of server time per request -> "
                  f"verification is {100 * cached / per_request_us:.2f}% (cached) / "
                  f"{100 * cold / per_request_us:.2f}% (cold) of it")
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()

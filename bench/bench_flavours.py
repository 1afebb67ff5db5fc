"""Flavour read benchmark: GET one and a filtered list over 10,000 flavours, real HTTP on loopback.

Starts ``vimkit serve`` as a separate process (SQLite in a temporary data directory, or the
database given with --database-url), loads the flavours through the store, then drives the server
with concurrent HTTP/1.1 keep-alive clients and prints requests/s, p50 and p99 per scenario.
It also times token verification in this process, the figure issue 3 asks to compare with GET.

    .venv/bin/python bench/bench_flavours.py [--flavours 10000] [--seconds 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
                "GET /compute/v1/flavours/{id}": lambda i: f"/compute/v1/flavours/bench-{(i * 7919) % n:05d}",
                "GET /compute/v1/flavours?filter=(eq,metadata/tier,gold);(gte,virtualCpu/numVirtualCpu,60)":
                    lambda i: "/compute/v1/flavours?filter=(eq,metadata/tier,gold);(gte,virtualCpu/numVirtualCpu,60)",
                "GET /compute/v1/flavours?filter=(eq,flavourId,<id>)":
                    lambda i: f"/compute/v1/flavours?filter=(eq,flavourId,bench-{(i * 7919) % n:05d})",
            }
            print(f"vimkit flavour benchmark: {n} flavours, {args.concurrency} concurrent clients, "
                  f"{args.seconds:.0f} s per scenario, database {args.database_url or 'sqlite'}")
            results = {}
            for name, path_for in scenarios.items():
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

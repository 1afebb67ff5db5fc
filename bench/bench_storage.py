"""Volume benchmark: allocate (and snapshot) throughput through HTTP on loopback.

Starts ``vimkit serve`` as a separate process (SQLite in a temporary data directory, or the
database given with --database-url; the simulated infrastructure with its default latencies and
built-in inventory), then drives it with concurrent keep-alive HTTP/1.1 clients:

1. ``POST /storage/v1/storages`` (1 GB volumes): claim, simulated ``create_volume``, one
   transaction with the volume, its claim and the ADDED notification;
2. ``POST /storage/v1/storages/{id}/operate`` CREATE_SNAPSHOT on the volumes just made.

3. allocate + attach: ``POST /storage/v1/storages`` then ``PATCH /compute/v1/computes/{id}`` with
   ``virtualDiskAttach`` (rest-binding.md §3) on one of 60 computes allocated beforehand; one
   measured request is the pair.

    .venv/bin/python bench/bench_storage.py [--seconds 10] [--concurrency 8] [--database-url URL]
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ADMIN = ("bench-admin", "bench-admin-secret-0123456789")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def drive(base_url: str, token: str, seconds: float, concurrency: int,
                request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
                expect: int) -> tuple[int, float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                 limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal errors, counter
            while time.monotonic() < deadline:
                index = counter
                counter += 1
                started = time.perf_counter()
                response = await request(client, index)
                latencies.append(time.perf_counter() - started)
                if response.status_code != expect:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies), elapsed, latencies, errors


def report(name: str, result: tuple[int, float, list[float], int]) -> None:
    count, elapsed, latencies, errors = result
    print(f"| {name} | {count / elapsed:,.0f} | {statistics.median(latencies) * 1000:.1f} ms | "
          f"{percentile(latencies, 0.99) * 1000:.1f} ms | {count} | {errors} |")


async def run(base_url: str, token: str, seconds: float, concurrency: int) -> None:
    created: list[str] = []

    async def allocate(client: httpx.AsyncClient, index: int) -> httpx.Response:
        response = await client.post("/storage/v1/storages", json={
            "storageName": f"bench-{index}", "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "metadata": {"bench": "storage"}})
        if response.status_code == 201:
            created.append(response.json()["storageId"])
        return response

    async def snapshot(client: httpx.AsyncClient, index: int) -> httpx.Response:
        volume_id = created[index % len(created)]
        return await client.post(f"/storage/v1/storages/{volume_id}/operate",
                                 json={"storageOperation": "CREATE_SNAPSHOT"})

    computes: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for index in range(60):
            response = await client.post("/compute/v1/computes", headers={"Prefer": "wait=30"},
                                         json={"computeFlavourId": "m1.tiny", "computeName": f"disk-host-{index}"})
            response.raise_for_status()
            computes.append(response.json()["computeId"])

    async def allocate_and_attach(client: httpx.AsyncClient, index: int) -> httpx.Response:
        response = await allocate(client, index)
        if response.status_code != 201:
            return response
        return await client.patch(f"/compute/v1/computes/{computes[index % len(computes)]}",
                                  headers={"Content-Type": "application/merge-patch+json"},
                                  json={"virtualDiskAttach": [response.json()["storageId"]]})

    print("| scenario | requests/s | p50 | p99 | requests | errors |")
    print("|---|---|---|---|---|---|")
    report("allocate `POST /storage/v1/storages` (1 GB)", await drive(base_url, token, seconds, concurrency, allocate, 201))
    report("snapshot `POST …/operate` CREATE_SNAPSHOT", await drive(base_url, token, seconds, concurrency, snapshot, 200))
    # Two requests per iteration on up to 60 computes: fewer workers than computes, so that no two
    # pairs wait for the same compute's lock.
    report("allocate + attach (`POST /storages`, then `PATCH /computes/{id}` virtualDiskAttach)",
           await drive(base_url, token, seconds, concurrency, allocate_and_attach, 200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-storage-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning"}
        command = [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if args.database_url:
            command += ["--database-url", args.database_url]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        base_url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):
                try:
                    if httpx.get(f"{base_url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            token = httpx.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            print(f"vimkit storage benchmark: {args.concurrency} concurrent connections, {args.seconds:.0f} s "
                  f"per scenario, database {args.database_url or 'sqlite'}, simulated infrastructure")
            asyncio.run(run(base_url, token, args.seconds, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()

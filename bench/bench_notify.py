"""Notification delivery benchmark: one VIM process, 50 subscribers on loopback.

Three processes: ``vimkit serve`` (SQLite, one worker), a receiver process serving 50 callback
ports with a minimal asyncio HTTP/1.1 server (so that the receivers are not the bottleneck),
and this driver, which creates flavours at a fixed rate. Every flavour created is one
InformationChangeNotification for each of the 50 subscribers. Latency is measured from just
before the driver sends the change (so it includes the API call and the commit) to the moment
the receiver has read the notification; both use CLOCK_MONOTONIC, which is shared by all
processes of the machine.

    .venv/bin/python bench/bench_notify.py [--subscribers 50] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


# --- receiver process ------------------------------------------------------------------------
class _Callback(asyncio.Protocol):
    """Just enough HTTP/1.1 for keep-alive POSTs and the subscription test GET."""

    def __init__(self, index: int, log: list[tuple[int, str, int, float]]) -> None:
        self.index = index
        self.log = log
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            if head.startswith("POST"):
                received = time.monotonic()
                note = json.loads(body)
                self.log.append((self.index, note["resourceTypeId"], note["sequence"], received))
            self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]


async def _receivers(ports: list[int], out: Path, seconds: float) -> None:
    log: list[tuple[int, str, int, float]] = []
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda i=i: _Callback(i, log), "127.0.0.1", port) for i, port in enumerate(ports)
    ]
    await asyncio.sleep(seconds)
    for server in servers:
        server.close()
    out.write_text(json.dumps(log))


# --- driver ----------------------------------------------------------------------------------
def wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="flavour changes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--receivers-only", nargs=3, metavar=("PORTS", "OUT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers_only:
        ports = [int(p) for p in args.receivers_only[0].split(",")]
        asyncio.run(_receivers(ports, Path(args.receivers_only[1]), float(args.receivers_only[2])))
        return

    with tempfile.TemporaryDirectory(prefix="vimkit-bench-notify-") as tmp:
        data = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ports = [free_port() for _ in range(args.subscribers)]
        out = data / "received.json"
        budget = args.seconds + 60
        receivers = subprocess.Popen([sys.executable, __file__, "--receivers-only",
                                      ",".join(map(str, ports)), str(out), str(budget)])
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_AUDIT_ENABLED": "false"}
        server = subprocess.Popen([sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port),
                                   "--data-dir", str(data / "vim")], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_ready(base)
            token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for receiver_port in ports:
                response = api.post("/compute-info/v1/subscriptions",
                                    json={"callbackUri": f"http://127.0.0.1:{receiver_port}/cb"})
                assert response.status_code == 201, response.text
            sent: dict[str, float] = {}
            interval = 1.0 / args.rate
            started = time.monotonic()
            count = int(args.rate * args.seconds)
            for index in range(count):
                target = started + index * interval
                pause = target - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                flavour_id = f"b{index}"
                sent[flavour_id] = time.monotonic()
                response = api.post("/compute/v1/flavours", json={
                    "flavourId": flavour_id, "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 256}})
                assert response.status_code == 201, response.text
            produced_in = time.monotonic() - started
            expected = count * args.subscribers
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pending = sum(
                    item["deliveryStatus"]["pendingCount"]
                    for item in api.get("/compute-info/v1/subscriptions").json()
                )
                if pending == 0:
                    break
                time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=30)
        receivers.wait(timeout=budget + 30)
        log = json.loads(out.read_text())
        latencies = sorted(received - sent[flavour] for _i, flavour, _seq, received in log if flavour in sent)
        first = min(sent.values())
        last = max(received for *_rest, received in log)
        in_order = _ordered(log)
        print(f"vimkit notification benchmark: {args.subscribers} subscribers, {args.rate:.0f} changes/s for "
              f"{args.seconds:.0f} s ({expected} notifications expected; changes produced in {produced_in:.1f} s)")
        print(f"  delivered {len(log)} notifications in {last - first:.2f} s: "
              f"{len(log) / (last - first):.0f} notifications/s sustained")
        print(f"  latency change->receiver: p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        print(f"  every subscriber got its notifications in sequence order: {in_order}")


def _ordered(log: list) -> bool:
    last: dict[int, int] = {}
    for index, _flavour, sequence, _time in log:
        if sequence <= last.get(index, 0):
            return False
        last[index] = sequence
    return True


if __name__ == "__main__":
    main()

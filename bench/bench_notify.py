"""Notification delivery benchmark: one VIM, 50 subscribers on loopback.

Three processes (plus the VIM's delivery workers with ``--workers``): ``vimkit serve`` (SQLite),
a receiver process serving 50 callback ports with a minimal asyncio HTTP/1.1 server (so that the
receivers are not the bottleneck; it parses every request and answers 204 only once it has read
the whole notification), and this driver, which creates flavours at a fixed rate (open loop, on
several connections). Every flavour created is one InformationChangeNotification for each of the 50 subscribers. Latency is measured from just
before the driver sends the change (so it includes the API call and the commit) to the moment
the receiver has read the notification; both use CLOCK_MONOTONIC, which is shared by all
processes of the machine.

    .venv/bin/python bench/bench_notify.py [--subscribers 50] [--rate 100] [--seconds 20] [--workers 1]

It also reports the CPU seconds each process used and the load average of the machine, which is
shared: all processes compete for its two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

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
                note = orjson.loads(body)
                self.log.append((self.index, note["resourceTypeId"], note["sequence"], received))
            self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]


async def _receivers(count: int, out: Path, seconds: float) -> None:
    """Serve ``count`` ports (printed on standard output, one line) until standard input closes
    (the driver is done) or ``seconds`` have passed."""
    log: list[tuple[int, str, int, float]] = []
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda i=i: _Callback(i, log), "127.0.0.1", 0) for i in range(count)]
    print(",".join(str(server.sockets[0].getsockname()[1]) for server in servers), flush=True)
    done = loop.create_future()

    class _Stdin(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_result(None)

    await loop.connect_read_pipe(_Stdin, sys.stdin)
    await asyncio.wait_for(done, seconds)
    for server in servers:
        server.close()
    out.write_text(json.dumps(log))


# --- driver ----------------------------------------------------------------------------------
def _wait_listening(port: int) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"receiver port {port} is not listening")


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
    parser.add_argument("--connections", type=int, default=8, help="driver connections (changes in flight at most)")
    parser.add_argument("--workers", type=int, default=0,
                        help="delivery worker processes (VIMKIT_NOTIFY_WORKERS; 0: delivery in the server process)")
    parser.add_argument("--timeline", action="store_true",
                        help="latency per second of the run (p50/p99/max of the changes sent in that second)")
    parser.add_argument("--profile", type=Path, help="py-spy profiles (raw) of the server and workers into this directory")
    parser.add_argument("--receivers-only", nargs=3, metavar=("COUNT", "OUT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers_only:
        run = asyncio.run
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
        run(_receivers(int(args.receivers_only[0]), Path(args.receivers_only[1]), float(args.receivers_only[2])))
        return

    with tempfile.TemporaryDirectory(prefix="vimkit-bench-notify-") as tmp:
        data = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        out = data / "received.json"
        budget = args.seconds + 600
        receivers = subprocess.Popen([sys.executable, __file__, "--receivers-only",
                                      str(args.subscribers), str(out), str(budget)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert receivers.stdout is not None
        ports = [int(p) for p in receivers.stdout.readline().decode().split(",")]
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning", "VIMKIT_AUDIT_ENABLED": "false",
               "VIMKIT_NOTIFY_WORKERS": str(args.workers)}
        server = subprocess.Popen([sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port),
                                   "--data-dir", str(data / "vim")], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_ready(base)
            for receiver_port in ports:  # the receiver process may start after the server
                _wait_listening(receiver_port)
            token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for receiver_port in ports:
                response = api.post("/compute-info/v1/subscriptions",
                                    json={"callbackUri": f"http://127.0.0.1:{receiver_port}/cb"})
                assert response.status_code == 201, response.text
            # The delivery workers start after the server answers: one change delivered to every
            # subscriber first, so that the measurement starts with delivery running.
            response = api.post("/compute/v1/flavours", json={
                "flavourId": "warm-up", "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 256}})
            assert response.status_code == 201, response.text
            _wait_delivered(api, 120, acknowledged=True)
            profilers = _profile(args.profile, server.pid, args.seconds) if args.profile else []
            load_before = os.getloadavg()
            cpu_before = _cpu(server.pid, receivers.pid)
            sent: dict[str, float] = {}
            answered: list[float] = []
            interval = 1.0 / args.rate
            started = time.monotonic()
            count = int(args.rate * args.seconds)
            # Open loop: each change leaves at its time whatever the previous ones' response
            # times, on up to --connections keep-alive connections (a CCM has several clients).
            local = threading.local()

            def change(index: int) -> None:
                connection = getattr(local, "connection", None)
                if connection is None:
                    connection = local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                flavour_id = f"b{index}"
                sent[flavour_id] = time.monotonic()
                connection.request("POST", "/compute/v1/flavours", body=orjson.dumps({
                    "flavourId": flavour_id, "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 256}}),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                response = connection.getresponse()
                text = response.read()
                assert response.status == 201, text
                answered.append(time.monotonic() - sent[flavour_id])

            with ThreadPoolExecutor(args.connections) as pool:
                futures = []
                for index in range(count):
                    pause = started + index * interval - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    futures.append(pool.submit(change, index))
                for future in futures:
                    future.result()
            produced_in = time.monotonic() - started
            expected = count * args.subscribers
            _wait_delivered(api, 60)
            cpu = {name: seconds - cpu_before.get(name, 0.0) for name, seconds in _cpu(server.pid, receivers.pid).items()}
            load_after = os.getloadavg()
            for profiler in profilers:
                profiler.wait(timeout=args.seconds + 60)
        finally:
            server.terminate()
            server.wait(timeout=30)
        assert receivers.stdin is not None
        receivers.stdin.close()
        receivers.wait(timeout=60)
        log = [entry for entry in json.loads(out.read_text()) if entry[1] != "warm-up"]
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
        answered.sort()
        print(f"  the changes themselves (POST /compute/v1/flavours): p50 "
              f"{statistics.median(answered) * 1000:.1f} ms, p99 {answered[int(len(answered) * 0.99) - 1] * 1000:.1f} ms")
        print(f"  every subscriber got its notifications in sequence order: {in_order}")
        print("  CPU seconds used from the first change to the last acknowledgement: "
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()))
        print(f"  load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
        if args.timeline:
            _timeline(log, sent, first)


def _timeline(log: list, sent: dict[str, float], first: float) -> None:
    """Where a tail comes from: a steady queue, or one stall."""
    seconds: dict[int, list[float]] = {}
    for _index, flavour, _sequence, received in log:
        if flavour in sent:
            seconds.setdefault(int(sent[flavour] - first), []).append(received - sent[flavour])
    for second, values in sorted(seconds.items()):
        values.sort()
        print(f"    second {second:3d}: {len(values):5d} notifications, p50 {statistics.median(values) * 1000:7.1f} ms, "
              f"p99 {values[int(len(values) * 0.99) - 1] * 1000:7.1f} ms, max {values[-1] * 1000:7.1f} ms")


def _profile(directory: Path, server: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    directory.mkdir(parents=True, exist_ok=True)
    pids = {"server": server}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == server:
                        pids[f"worker-{entry}"] = int(entry)
            except (OSError, IndexError, ValueError):
                continue
    spy = Path(sys.executable).parent / "py-spy"
    return [subprocess.Popen([str(spy), "record", *(["--gil"] if os.environ.get("BENCH_PROFILE_GIL", "1") == "1" else []), "-f", "raw", "-r", "200", "-d", str(int(seconds)), "-o",
                              str(directory / f"{name}.txt"), "--pid", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()]


def _wait_delivered(api: httpx.Client, seconds: float, acknowledged: bool = False) -> None:
    """Until nothing is pending (and, with ``acknowledged``, every subscriber acknowledged something:
    a notification not fanned out yet is not pending either)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses = [item["deliveryStatus"] for item in api.get("/compute-info/v1/subscriptions").json()]
        if all(status["pendingCount"] == 0 and (status.get("lastSuccessAt") or not acknowledged)
               for status in statuses):
            return
        time.sleep(0.2)
    raise RuntimeError("notifications still pending")


def _cpu(server: int, receivers: int) -> dict[str, float]:
    """CPU seconds (user + system) of the server, its worker processes, the receivers and this driver."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid: int) -> tuple[int, float]:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick

    workers = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent, seconds = stat(int(entry))
            except (OSError, IndexError, ValueError):
                continue
            if parent == server:
                workers += seconds
    return {"server": stat(server)[1], "delivery workers": workers, "receivers": stat(receivers)[1],
            "driver": stat(os.getpid())[1]}


def _ordered(log: list) -> bool:
    last: dict[int, int] = {}
    for index, _flavour, sequence, _time in log:
        if sequence <= last.get(index, 0):
            return False
        last[index] = sequence
    return True


if __name__ == "__main__":
    main()

"""SIGKILL the server, or one of its delivery workers, while hundreds of notifications are
pending; after a restart all arrive.

The server runs as a real ``vimkit serve`` process so that the kill is a real crash: no
shutdown hook runs, leases stay taken, deliveries stay half done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_ID, ADMIN_SECRET, child_processes
from tests.receivers import Behaviour, Receiver

pytestmark = pytest.mark.slow
TOTAL = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, port: int, workers: int = 0) -> subprocess.Popen[bytes]:
    env = {
        "VIMKIT_NOTIFY_WORKERS": str(workers),
        **os.environ,
        "VIMKIT_ADMIN_CLIENT_ID": ADMIN_ID,
        "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN_SECRET,
        "VIMKIT_NOTIFY_BACKOFF_BASE": "0.05",
        "VIMKIT_NOTIFY_BACKOFF_CAP": "0.5",
        "VIMKIT_NOTIFY_POLL_INTERVAL": "0.1",
        "VIMKIT_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("vimkit serve did not become ready")


def _workers_of(server: subprocess.Popen[bytes], count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = child_processes(server.pid, "deliver --from-server")
        if len(workers) == count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"expected {count} delivery workers under the server")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kill", ["server", "server with a delivery worker", "delivery worker"])
def test_sigkill_with_pending_notifications_loses_nothing(tmp_path: Path, kill: str) -> None:
    # Slow enough (at most ~30/s) that hundreds are still pending when the kill comes.
    receiver = Receiver(Behaviour(delay=0.03)).start()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    workers = 0 if kill == "server" else 1
    server = _serve(tmp_path, port, workers)
    try:
        token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                           auth=(ADMIN_ID, ADMIN_SECRET)).json()["access_token"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            assert api.post("/compute-info/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            for index in range(TOTAL):
                body = {"flavourId": f"crash-{index}", "virtualCpu": {"numVirtualCpu": 1},
                        "virtualMemory": {"virtualMemSize": 256}}
                assert api.post("/compute/v1/flavours", json=body).status_code == 201
        receiver.wait_for(20, timeout=30)
        if kill == "delivery worker":
            (worker,) = _workers_of(server, 1)
            os.kill(worker, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(worker) and time.monotonic() < deadline:
                time.sleep(0.02)
            before_restart = len(receiver.notifications)
            assert before_restart < TOTAL, "everything was delivered before the kill; nothing was pending"
            # The server starts a new worker, which resumes the dead one's leases (same replica id).
            assert _workers_of(server, 1)[0] != worker
        else:
            orphans = _workers_of(server, workers)
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
            before_restart = len(receiver.notifications)
            assert before_restart < TOTAL, "everything was delivered before the kill; nothing was pending"
            # Workers whose server is gone stop by themselves (end of their standard input).
            deadline = time.monotonic() + 20
            while any(_alive(pid) for pid in orphans) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(_alive(pid) for pid in orphans), "a delivery worker outlived its server"
            server = _serve(tmp_path, port, workers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({n["id"] for n in receiver.notifications}) < TOTAL:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        server.kill()
        server.wait(timeout=10)
        receiver.stop()

    sequences = [n["sequence"] for n in receiver.notifications]
    assert set(sequences) == set(range(1, TOTAL + 1)), "a notification was lost"
    first_seen: list[int] = []
    for sequence in sequences:
        if sequence not in first_seen:
            first_seen.append(sequence)
    assert first_seen == list(range(1, TOTAL + 1)), "first deliveries were out of order"
    duplicates = len(sequences) - TOTAL
    # Only the acknowledgements the crash lost are re-sent: at most one unrecorded batch.
    assert duplicates <= 50, duplicates
    resumed_at = sequences[before_restart] if before_restart < len(sequences) else None
    assert resumed_at is not None and resumed_at <= sequences[before_restart - 1] + 1

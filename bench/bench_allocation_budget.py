"""Where an allocation's CPU goes on the event loop's thread, at a fixed arrival rate.

The HTTP benchmark (bench_compute.py) says how fast allocations are; this one says what the
server's one event-loop thread spends on each, which is what bounds that speed. It builds the
VIM in this process (SQLite in a temporary directory, the simulated infrastructure without
artificial latency, the inventory of bench_compute.py), calls the ASGI application directly (no
sockets, so none of the HTTP server's cost and far less of a shared machine's noise; on uvloop,
as the server), and sends
``POST /compute/v1/computes`` with ``Prefer: wait`` at --rate per second whatever the answers
do. Each round prints the latency from POST to ALLOCATED, the CPU per allocation of the process
and of the loop's thread, and the loop thread's CPU per allocation by part:

- the group-commit works (an allocation's claim and its completion), and the BEGIN and COMMIT of
  the transactions that carry them;
- fan-out of the notifications the allocations emit, its own transactions included;
- the simulated driver creating the compute, and saving the simulator's state;
- the rest: the API path without HTTP, tasks and waits, and this load generator's own calls.

The parts are measured by wrapping those functions with the thread's CPU clock (a few µs each).

    .venv/bin/python bench/bench_allocation_budget.py [--rate 500] [--count 3000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import inspect
import itertools
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import uvloop

os.environ["VIMKIT_SIM_LATENCY_SCALE"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compute import INVENTORY, cpu_seconds  # noqa: E402
from vimkit.app import build_services, create_app  # noqa: E402
from vimkit.config import Settings  # noqa: E402
from vimkit.drivers.sim import compute as sim_compute  # noqa: E402
from vimkit.drivers.sim import core as sim_core  # noqa: E402
from vimkit.notify import dispatcher, fanout  # noqa: E402
from vimkit.store import group_commit  # noqa: E402
from vimkit.store.db import Database  # noqa: E402

ADMIN = ("bench-admin", "bench-admin-secret-0123456789")
MAIN = threading.main_thread().ident
SPENT: Counter[str] = Counter()


def _measured(owner: Any, name: str, part: str) -> None:
    """Replace ``owner.name`` by a wrapper adding the main thread's CPU time in it to ``part``."""
    raw = inspect.getattr_static(owner, name)
    function = raw.__func__ if isinstance(raw, staticmethod) else raw
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return await function(*args, **kwargs)
            finally:
                SPENT[part] += time.thread_time() - started
    else:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != MAIN:
                return function(*args, **kwargs)
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                SPENT[part] += time.thread_time() - started
    setattr(owner, name, staticmethod(wrapper) if isinstance(raw, staticmethod) else wrapper)


def _measured_transactions() -> None:
    """BEGIN and COMMIT (with their bookkeeping) of the loop's write transactions, fan-out's
    excepted (counted with fan-out): the kept session's context manager, entered and left."""
    opened = Database._kept_write_session

    @contextmanager
    def kept(self: Database) -> Iterator[Any]:
        counted = threading.get_ident() == MAIN and not IN_FANOUT[0]
        started = time.thread_time()
        manager = opened(self)
        session = manager.__enter__()
        if counted:
            SPENT["begin_commit"] += time.thread_time() - started
            TRANSACTIONS[0] += 1
        try:
            yield session
        except BaseException:
            if not manager.__exit__(*sys.exc_info()):
                raise
        else:
            started = time.thread_time()
            manager.__exit__(None, None, None)
            if counted:
                SPENT["begin_commit"] += time.thread_time() - started

    Database._kept_write_session = kept  # type: ignore[method-assign]


def _measured_fanout() -> None:
    here = fanout.fan_out_here

    def wrapper(*args: Any) -> Any:
        IN_FANOUT[0] = True
        started = time.thread_time()
        try:
            return here(*args)
        finally:
            SPENT["fanout"] += time.thread_time() - started
            IN_FANOUT[0] = False

    dispatcher.fan_out_here = wrapper  # the dispatcher imported it by name


IN_FANOUT = [False]
TRANSACTIONS = [0]  # the loop's group-commit transactions this round
PARTS = {
    "works": "group-commit works: an allocation's claim and completion (statements and decisions)",
    "begin_commit": "BEGIN and COMMIT of the loop's group-commit transactions",
    "fanout": "fan-out of notifications, its transactions included",
    "driver": "simulated driver: create the compute",
    "sim_state": "simulator state: record and schedule its save",
}
_measured(group_commit.GroupCommit, "_run_works", "works")
_measured_transactions()
_measured_fanout()
_measured(sim_compute.ComputeOps, "create_compute", "driver")
_measured(sim_core.SimCore, "_save", "sim_state")
_measured(sim_core.SimCore, "_flush_soon", "sim_state")


async def call(app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8700), "state": {}}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays until it has its answer
        return {"type": "http.disconnect"}

    status, chunks = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def thread_seconds() -> Counter[str]:
    """CPU seconds so far of this process's other threads, by name (worker threads summed)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    spent: Counter[str] = Counter()
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) == threading.main_thread().native_id:
            continue
        try:
            seconds = cpu_seconds(f"self/task/{task.name}")
        except OSError:  # ended meanwhile
            continue
        name = names.get(int(task.name), "(not a Python thread)")
        spent["executor threads" if name.startswith(("asyncio_", "uvloop_")) else name] += seconds
    return spent


async def run(rate: float, count: int, rounds: int, workdir: Path) -> None:
    inventory = workdir / "inventory.toml"
    inventory.write_text(INVENTORY)
    database = workdir / "vimkit.db"
    wal = database.with_name(database.name + "-wal")
    settings = Settings(data_dir=workdir, database_url=f"sqlite:///{database}", log_level="warning",
                        admin_client_id=ADMIN[0], admin_client_secret=ADMIN[1], inventory_file=inventory)
    services = build_services(settings)
    app = create_app(settings, services)
    async with app.router.lifespan_context(app):
        basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode())
        status, body = await call(app, "POST", "/oauth2/token", b"grant_type=client_credentials", [
            (b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", b"Basic " + basic)])
        assert status == 200, body
        headers = [(b"authorization", b"Bearer " + orjson.loads(body)["access_token"].encode()),
                   (b"content-type", b"application/json"), (b"prefer", b"wait=30")]
        numbers = itertools.count()
        latencies: list[float] = []
        statuses: Counter[int] = Counter()

        async def allocate() -> None:
            payload = orjson.dumps({"computeFlavourId": "m1.tiny", "computeName": f"budget-{next(numbers)}"})
            started = time.perf_counter()
            answer, _ = await call(app, "POST", "/compute/v1/computes", payload, headers)
            latencies.append(time.perf_counter() - started)
            statuses[answer] += 1

        for _ in range(100):  # warm up: caches, compiled statements, the kept write session
            await allocate()
        loop = asyncio.get_running_loop()
        print(f"| round | allocations | statuses | p50 | p99 | max | process CPU | loop thread CPU | "
              f"{' | '.join(PARTS)} | rest |")
        print("|---" * (8 + len(PARTS)) + "|")
        for number in range(1, rounds + 1):
            await asyncio.sleep(0.5)  # let the warm-up's or the last round's fan-out finish
            latencies.clear()
            statuses.clear()
            SPENT.clear()
            TRANSACTIONS[0] = 0
            process, thread, others = time.process_time(), time.thread_time(), thread_seconds()
            start = loop.time()
            tasks = []
            for index in range(count):
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(allocate()))
            await asyncio.gather(*tasks)
            process, thread = time.process_time() - process, time.thread_time() - thread
            others = thread_seconds() - others
            latencies.sort()

            def at(fraction: float) -> str:
                return f"{1e3 * latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]:.1f} ms"

            def per(seconds: float) -> str:
                return f"{1e6 * seconds / count:.0f} µs"

            measured = sum(SPENT[part] for part in PARTS)
            print(f"| {number} | {count} at {rate:.0f}/s | {dict(statuses)} | {at(0.5)} | {at(0.99)} | {at(1.0)} | "
                  f"{per(process)} | {per(thread)} | {' | '.join(per(SPENT[part]) for part in PARTS)} | "
                  f"{per(thread - measured)} |")
            print(f"  group-commit transactions on the loop per allocation: {TRANSACTIONS[0] / count:.2f}; "
                  f"WAL file {wal.stat().st_size / 2**20 if wal.exists() else 0:.1f} MiB")
            print("  other threads: " + ", ".join(f"{name} {per(spent)}" for name, spent in others.most_common()))
        print()
        for part, meaning in PARTS.items():
            print(f"- {part}: {meaning}")
        print("- rest: the API path without HTTP, tasks and waits, and this load generator's own calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="allocations sent per second")
    parser.add_argument("--count", type=int, default=3000, help="allocations per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-budget-") as workdir:
        # The event loop the server runs on (uvicorn picks uvloop when it is installed).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args.rate, args.count, args.rounds, Path(workdir)))


if __name__ == "__main__":
    main()

"""Delivery in processes of its own, so that it gets a core the API does not use.

With ``notify_workers = N > 0`` the server does not deliver itself: it starts N ``vimkit
deliver`` processes. Each runs an ordinary :class:`~vimkit.notify.dispatcher.Dispatcher` — the
fan-out, the leases, the acknowledgement bookkeeping — under the replica id
``<replica id>-w<index>``, so a worker is a replica that only delivers and everything said about
replicas holds (no double delivery, a restarted worker resumes its leases at once).

The server talks to its workers through each worker's standard input: the first line is the
server's settings (JSON; credentials included, so they never appear in the environment or on
the command line), then one byte per committed transaction that emitted notifications, which
wakes the worker's fan-out at once instead of at its next poll. End of input means the server
is gone: the worker records what was acknowledged, releases its leases and exits. A worker that
dies is started again by the server.

On SQLite the server and its workers write the same database file from different processes.
Each write transaction starts with ``BEGIN IMMEDIATE`` under SQLite's busy timeout, so writers
would queue instead of failing; but SQLite's busy handler waits by sleeping 1, 2, 5, 10 … ms
between attempts, and measured with one worker that made the API's writes wait 140 ms at the
median at 100 changes/s. So with workers on SQLite every process takes an exclusive ``flock`` on
``<database>.writers`` around its write transactions (inside the process-wide write lock of
:class:`~vimkit.store.db.Database`): a waiting writer is woken by the kernel the moment the
other process commits. The workers also keep their write transactions few (fan-out batches,
acknowledgements every 20 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from vimkit.config import Settings
from vimkit.notify.dispatcher import Dispatcher, DispatchSettings, shorten_switch_interval
from vimkit.store.db import Database

log = logging.getLogger("vimkit.notify")

_RESTART_DELAY = 0.5
_STOP_TIMEOUT = 10.0


def settings_line(settings: Settings, dispatch: DispatchSettings, replica_id: str) -> bytes:
    """What a worker needs, as one JSON line, secrets in clear (for a pipe to a child only)."""
    values = settings.model_dump(mode="json")
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values[name] = value.get_secret_value()
    return json.dumps({"settings": values, "dispatch": asdict(dispatch), "replica_id": replica_id}).encode() + b"\n"


class _WritersLock:
    """This process's write lock, then an exclusive ``flock`` shared with the other processes."""

    def __init__(self, inner: Any, path: str) -> None:
        self.inner = inner
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, blocking: bool = True) -> bool:
        if not self.inner.acquire(blocking):
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.inner.release()
            return False
        except BaseException:
            self.inner.release()
            raise
        return True

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.inner.release()

    def __enter__(self) -> _WritersLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def share_sqlite_writes(database: Database) -> None:
    """Make ``database``'s writers queue on a lock file shared by the VIM's processes (SQLite only).

    :class:`~vimkit.store.db.Database` takes its ``write_lock`` around every write transaction;
    with another database, or an in-memory one, this does nothing.
    """
    inner = database.write_lock
    if database.dialect != "sqlite" or inner is None or isinstance(inner, _WritersLock):
        return
    path = make_url(database.url).database
    if not path or path == ":memory:":
        return
    database.write_lock = _WritersLock(inner, f"{path}.writers")


def worker_replica_id(base: str, index: int) -> str:
    return f"{base}-w{index}"


class DeliveryWorkers:
    """The server's side: starts, wakes, restarts and stops the worker processes."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.database = dispatcher.database
        self.count = settings.notify_workers
        self.line = settings_line(settings, dispatcher.settings, dispatcher.replica_id)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self._fds: list[int | None] = [None] * self.count
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self, index: int) -> None:
        command = [sys.executable, "-m", "vimkit.cli.main", "deliver", "--from-server",
                   "--worker-index", str(index)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, close_fds=True)
        assert process.stdin is not None
        process.stdin.write(self.line)
        process.stdin.flush()
        fd = process.stdin.fileno()
        os.set_blocking(fd, False)
        self.processes[index] = process
        self._fds[index] = fd

    async def start(self) -> None:
        share_sqlite_writes(self.database)
        shorten_switch_interval()  # the API's writers hold the lock the workers wait for
        for index in range(self.count):
            self._spawn(index)
        self.database.after_notifications.append(self.wake)
        self._supervisor = asyncio.create_task(self._supervise(), name="vimkit-delivery-workers")

    def wake(self) -> None:
        """Thread-safe: a transaction that emitted notifications has committed."""
        for fd in self._fds:
            if fd is None:
                continue
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(fd, b"!")  # a full pipe means the worker has wake-ups waiting anyway

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_RESTART_DELAY)
            for index, process in enumerate(self.processes):
                if self._stopping or process is None or process.poll() is None:
                    continue
                log.warning("delivery worker %d exited with %s; starting it again", index, process.returncode)
                self._close_pipe(index)
                self._spawn(index)

    def _close_pipe(self, index: int) -> None:
        process = self.processes[index]
        self._fds[index] = None
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()

    async def stop(self) -> None:
        self._stopping = True
        if self.wake in self.database.after_notifications:
            self.database.after_notifications.remove(self.wake)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for index in range(self.count):
            self._close_pipe(index)  # end of input: the worker finishes its bookkeeping and exits
        deadline = time.monotonic() + _STOP_TIMEOUT
        for process in self.processes:
            if process is None:
                continue
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                process.kill()
                process.wait()


# -- the worker process ---------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerConfig:
    settings: Settings
    dispatch: DispatchSettings
    replica_id: str


def read_config_from_server() -> WorkerConfig:
    line = sys.stdin.buffer.readline()
    if not line:
        raise SystemExit("vimkit deliver --from-server: no settings on standard input")
    values: dict[str, Any] = json.loads(line)
    return WorkerConfig(Settings(**values["settings"]), DispatchSettings(**values["dispatch"]), values["replica_id"])


def config_from_settings(settings: Settings) -> WorkerConfig:
    """``vimkit deliver`` started by hand: the settings as ``vimkit serve`` would derive them."""
    from vimkit.app import dispatch_settings, replica_id

    return WorkerConfig(settings, dispatch_settings(settings), replica_id(settings))


def run_worker(config: WorkerConfig, index: int | None, from_server: bool) -> None:
    """Deliver until SIGTERM/SIGINT, or until the server closes our standard input."""
    from vimkit.logging import configure_logging

    configure_logging(config.settings)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    runner(_worker_main(config, index, from_server))


async def _worker_main(config: WorkerConfig, index: int | None, from_server: bool) -> None:
    from vimkit.domain.alarms import AlarmService
    from vimkit.notify.callbacks import TokenCache
    from vimkit.notify.secrets import SecretBox
    settings = config.settings

    database = Database(settings.effective_database_url)
    share_sqlite_writes(database)
    box = SecretBox.from_data_dir(
        settings.data_dir, settings.secret_key.get_secret_value() if settings.secret_key else None
    )
    name = worker_replica_id(config.replica_id, index) if index is not None else config.replica_id
    dispatcher = Dispatcher(database, box, config.dispatch, name, tokens=TokenCache())
    dispatcher.alarms = AlarmService(
        database, settings.vim_id, config.dispatch.base_url, settings.alarm_capacity_threshold,
        timedelta(hours=settings.alarm_retention_hours),
    )
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    transport = None
    if from_server:
        class _Wakes(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                dispatcher.wake()

            def connection_lost(self, exc: Exception | None) -> None:
                done.set()

            def eof_received(self) -> bool | None:
                done.set()
                return None

        transport, _ = await loop.connect_read_pipe(_Wakes, sys.stdin.buffer)
    await dispatcher.start()
    log.info("delivery worker %s started", name)
    try:
        await done.wait()
    finally:
        await dispatcher.stop()
        if transport is not None:
            transport.close()
        database.dispose()

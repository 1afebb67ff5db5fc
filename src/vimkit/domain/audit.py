"""The audit log: who did what, when, with which outcome — for every mutating call.

Entries are queued by the request path (:meth:`AuditLog.record` costs a queue put) and written in
batches by one background thread, so auditing adds no database round trip to a request. An entry
holds the time, the consumer (or none), its resource group, the client address, the method, the
path (without query string), the status, the request id and the duration; never a request body,
a header or a secret. :meth:`AuditLog.flush` waits until everything queued is written (the admin
API calls it before reading, and shutdown calls it before the database closes).
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import insert, select

from vimkit.api.problems import invalid
from vimkit.store.db import Database
from vimkit.store.models import AuditRow
from vimkit.store.repository import utcnow

log = logging.getLogger("vimkit.audit")

_BATCH = 500
# How long the thread waits for more entries after the first: one transaction (and one wake-up,
# with its GIL trades against the event loop) per 100 ms at most, not one per request or two.
_LINGER = 0.1
_RETRIES = 3
_INSERT = insert(AuditRow.__table__)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    occurred_at: datetime
    consumer_id: str | None
    resource_group_id: str | None
    client_ip: str | None
    method: str
    path: str
    status: int
    request_id: str | None
    duration_us: int | None = None

    def row_values(self) -> dict[str, object]:
        return {
            "occurred_at": self.occurred_at,
            "consumer_id": _clip(self.consumer_id, 64),
            "resource_group_id": _clip(self.resource_group_id, 64),
            "client_ip": _clip(self.client_ip, 64),
            "method": self.method[:16],
            "path": self.path[:512],
            "status": self.status,
            "request_id": _clip(self.request_id, 128),
            "duration_us": self.duration_us,
        }


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditRow]
    next_marker: str | None


class AuditLog:
    def __init__(self, database: Database, enabled: bool = True) -> None:
        self.database = database
        self.enabled = enabled
        self._queue: queue.SimpleQueue[AuditEntry | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- writing ---------------------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> None:
        if not self.enabled or self._closed:
            return
        with self._idle:
            self._pending += 1
        self._queue.put(entry)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vimkit-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            stop = first is None
            if not stop:
                # Let the requests of a burst share one transaction (and this thread wake once).
                time.sleep(_LINGER)
            batch = [] if first is None else [first]
            while len(batch) < _BATCH:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    continue
                batch.append(entry)
            if batch:
                self._write(batch)
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()
            if stop:
                return

    def _write(self, batch: list[AuditEntry]) -> None:
        values = [entry.row_values() for entry in batch]
        for attempt in range(_RETRIES):
            try:
                with self.database.write() as session:
                    # Core executemany: the ORM's bulk insert costs several times more per row.
                    session.connection().execute(_INSERT, values)
                return
            except Exception as exc:  # the database may be busy or briefly down: retry, then report
                if attempt == _RETRIES - 1:
                    log.error("could not write %d audit entries: %s", len(batch), type(exc).__name__)
                else:
                    threading.Event().wait(0.2 * (attempt + 1))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every entry recorded so far is written; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout=timeout)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)

    # -- reading ---------------------------------------------------------------------------------

    def list(
        self,
        size: int,
        marker: str | None = None,
        consumer_id: str | None = None,
        since: datetime | None = None,
    ) -> AuditPage:
        """Oldest first, keyset-paged on the insertion order."""
        after = _decode_marker(marker) if marker else 0
        query = select(AuditRow).where(AuditRow.seq > after)
        if consumer_id is not None:
            query = query.where(AuditRow.consumer_id == consumer_id)
        if since is not None:
            query = query.where(AuditRow.occurred_at >= since)
        query = query.order_by(AuditRow.seq).limit(size + 1)
        with self.database.read() as session:
            rows = list(session.scalars(query))
        more = len(rows) > size
        return AuditPage(rows[:size], _encode_marker(rows[size - 1].seq) if more else None)


def cli_entry(action: str, status: int, consumer_id: str | None = None) -> AuditEntry:
    """An entry for an operator command run with the ``vimkit`` CLI on this machine."""
    return AuditEntry(utcnow(), consumer_id, None, "local", "CLI", action, status, None)


def _encode_marker(seq: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": seq})).decode().rstrip("=")


def _decode_marker(marker: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode((marker + "=" * (-len(marker) % 4)).encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise invalid("nextpage_opaque_marker", "not a marker this server issued") from exc
    if not isinstance(data, dict) or not isinstance(data.get("after"), int) or data["after"] < 0:
        raise invalid("nextpage_opaque_marker", "not a marker this server issued")
    return int(data["after"])

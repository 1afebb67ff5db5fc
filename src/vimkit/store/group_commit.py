"""Group commit: many small write transactions from concurrent requests share one commit.

One SQLite database has one writer at a time, and a transaction's fixed costs (BEGIN IMMEDIATE,
COMMIT, a worker-thread hop) are a large part of a small write. Writes submitted while a batch
is being written wait for the next batch, which then runs them in one transaction, each inside
its own SAVEPOINT: one that fails is rolled back alone and its caller gets its exception, the
others commit. A caller's result is delivered only after the commit, so nothing is reported
done before it is durable. Under light load a batch holds one write and costs what a plain
transaction costs.

A work declared ``plain`` (it runs SQL statements and ORM reads, but adds, changes and deletes
no ORM objects) gets its savepoint as two statements on the driver's cursor instead of an ORM
nested transaction: the ORM's bookkeeping for a savepoint cost 45 µs of CPU against 3 µs, twice
per allocation. Should a plain work leave ORM changes after all, they are flushed inside its
savepoint; on failure, what it added is expunged and what it changed is expired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from vimkit.store.db import Database
from vimkit.store.repository import connection_of

T = TypeVar("T")
Work = Callable[[Session], Any]
_SAVEPOINT = "vimkit_work"


#: Batches up to this size are written on the event loop's thread (:meth:`Database.write_on_loop`,
#: which waits for a busy SQLite writer without holding the loop): under light load every batch is
#: small, and the thread round trip cost more than the write itself.
INLINE_BATCH = 4
#: Bigger batches too, as long as their estimated write time (a transaction's own cost plus their
#: works times the cost of one, both as measured recently on the loop) stays under this, so the
#: loop is never held for long. A batch written by a worker thread costs more CPU in all than on
#: the loop (an allocation's two writes, 0.17 ms each on the loop, took 0.43 ms each on a worker
#: measured here): the worker gives up the GIL in every SQLite call and must win it back from the
#: busy loop each time. So the budget is generous: at 10 ms, allocations arriving at 450–550 a
#: second (one core's worth) tipped batches over it, the worker's extra CPU made the next batches
#: bigger still, and the server settled with the worker holding half its CPU and latencies of
#: 120 ms; at 40 ms they stayed on the loop and the median was 20–60 ms (docs/benchmarks.md).
INLINE_BUDGET = 0.040
_FIRST_ESTIMATE = 0.0005  # seconds per work (and per transaction), until writes have been measured
#: A ``lazy`` work (a background task's completion, say) waits up to this long for an eager one
#: to share its transaction, while some write request being served may still bring one (see
#: :class:`Demand`). Under a stream of allocations each one's completion then rides on a later
#: one's claim: one transaction per allocation instead of two.
LAZY_WAIT = 0.003


class Demand:
    """How many write requests (POST, PUT, PATCH, DELETE) the API is serving right now; the API
    counts them.

    A lazy work waits for company only while more requests are being served than lazy works are
    waiting: each waiting work's own request may be one of them, waiting for it (``Prefer:
    wait``), and such a request brings nothing more. So a client sending one request at a time
    never waits, nor do clients whose requests all wait on completions already queued (they are
    written at once, together); a request still on its way to its first write is what a lazy work
    waits for."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0

    def expects_writes(self, waiting: int) -> bool:
        """Whether a write may still come from a request other than those of ``waiting`` works."""
        return self.requests > waiting


class GroupCommit:
    def __init__(self, database: Database, max_batch: int = 64, inline_budget: float = INLINE_BUDGET,
                 lazy_wait: float = LAZY_WAIT, demand: Demand | None = None) -> None:
        self.database = database
        self.max_batch = max_batch
        self.inline_budget = inline_budget
        self.lazy_wait = lazy_wait
        self.demand = demand  # None: lazy works are written at once
        # Moving averages of what one work and a transaction's own begin and commit held the
        # loop for, from the batches written there (batches of up to INLINE_BATCH go there
        # whatever the estimate, so it keeps up).
        self.work_seconds = _FIRST_ESTIMATE
        self.transaction_seconds = _FIRST_ESTIMATE
        self._queue: list[tuple[tuple[Work, bool], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lazy_queued = 0  # lazy works queued since a writer last took the queue

    async def run(self, work: Callable[[Session], T], *, plain: bool = False, lazy: bool = False) -> T:
        """Run ``work`` in the next batch's transaction; ``plain``: see the module's docstring;
        ``lazy``: see :data:`LAZY_WAIT`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(((work, plain), future))
        if lazy:
            self._lazy_queued += 1
        if not lazy or self.demand is None or not self.demand.expects_writes(self._lazy_queued):
            self._start()
        elif self._timer is None and (self._writer is None or self._writer.done()):
            self._timer = loop.call_later(self.lazy_wait, self._start)
        return await future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="vimkit-group-commit")

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._lazy_queued = 0  # the writer goes on until the queue is empty: none waits now
            works = [work for work, _future in batch]
            try:
                outcomes = await self._write_here(works) if self._fits_inline(len(works)) else None
                if outcomes is None:
                    outcomes = await asyncio.to_thread(self._write, works)
            except BaseException as exc:  # the commit itself failed: every item of the batch failed
                for _work, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_work, future), (ok, value) in zip(batch, outcomes):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _fits_inline(self, size: int) -> bool:
        return size <= INLINE_BATCH or self.transaction_seconds + size * self.work_seconds <= self.inline_budget

    async def _write_here(self, works: list[tuple[Work, bool]]) -> list[tuple[bool, Any]] | None:
        async with self.database.write_on_loop() as session:
            if session is None:
                return None
            started = time.perf_counter()  # what the loop is held for
            outcomes, in_works = self._run_works(session, works)
        elapsed = time.perf_counter() - started
        self.work_seconds += 0.2 * (in_works / len(works) - self.work_seconds)
        self.transaction_seconds += 0.2 * (elapsed - in_works - self.transaction_seconds)
        return outcomes

    def _write(self, works: list[tuple[Work, bool]]) -> list[tuple[bool, Any]]:
        # Not observed: a worker's own CPU per work was 2.5 times the loop's for the same works
        # (GIL trades), so it says little about what the loop would be held for.
        with self.database.write() as session:
            return self._run_works(session, works)[0]

    @staticmethod
    def _run_works(session: Session, works: list[tuple[Work, bool]]) -> tuple[list[tuple[bool, Any]], float]:
        """Each work's outcome, and the seconds spent in the works (savepoints included)."""
        outcomes: list[tuple[bool, Any]] = []
        cursor = None
        started = time.perf_counter()
        try:
            for work, plain in works:
                if not plain:
                    try:
                        with session.begin_nested():
                            outcomes.append((True, work(session)))
                    except Exception as exc:  # noqa: BLE001 - handed to that caller only
                        outcomes.append((False, exc))
                    continue
                if cursor is None:
                    cursor = connection_of(session).connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                outcomes.append(_run_plain(session, cursor, work))
        finally:
            if cursor is not None:
                cursor.close()
        return outcomes, time.perf_counter() - started


def _run_plain(session: Session, cursor: Any, work: Work) -> tuple[bool, Any]:
    cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        value = work(session)
        if session.new or session.dirty or session.deleted:
            session.flush()
    except Exception as exc:  # noqa: BLE001 - handed to that caller only
        cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        for instance in list(session.new):
            session.expunge(instance)
        for instance in list(session.dirty) + list(session.deleted):
            session.expire(instance)
        return False, exc
    cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return True, value

"""Group commit: many small write transactions from concurrent requests share one commit.

One SQLite database has one writer at a time, and a transaction's fixed costs (BEGIN IMMEDIATE,
COMMIT, a worker-thread hop) are a large part of a small write. Writes submitted while a batch
is being written wait for the next batch, which then runs them in one transaction, each inside
its own SAVEPOINT: one that fails is rolled back alone and its caller gets its exception, the
others commit. A caller's result is delivered only after the commit, so nothing is reported
done before it is durable. Under light load a batch holds one write and costs what a plain
transaction costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from vimkit.store.db import Database

T = TypeVar("T")
Work = Callable[[Session], Any]


#: Batches up to this size are written on the event loop's thread when the SQLite writer is free
#: (:meth:`Database.write_if_free`); bigger ones go to a worker thread, so the loop is never
#: held for long. Under light load every batch is small, and the thread round trip cost more
#: than the write itself.
INLINE_BATCH = 4


class GroupCommit:
    def __init__(self, database: Database, max_batch: int = 64) -> None:
        self.database = database
        self.max_batch = max_batch
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[Session], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="vimkit-group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            works = [work for work, _future in batch]
            try:
                outcomes = self._write_here(works) if len(works) <= INLINE_BATCH else None
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

    def _write_here(self, works: list[Work]) -> list[tuple[bool, Any]] | None:
        with self.database.write_if_free() as session:
            return None if session is None else self._run_works(session, works)

    def _write(self, works: list[Work]) -> list[tuple[bool, Any]]:
        with self.database.write() as session:
            return self._run_works(session, works)

    @staticmethod
    def _run_works(session: Session, works: list[Work]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        for work in works:
            try:
                with session.begin_nested():
                    outcomes.append((True, work(session)))
            except Exception as exc:  # noqa: BLE001 - handed to that caller only
                outcomes.append((False, exc))
        return outcomes

"""Engine and session handling for SQLite (default) and PostgreSQL with the same code.

SQLite runs in WAL mode with a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so
that two writers queue on the database lock instead of failing when a read lock is upgraded.
PostgreSQL uses READ COMMITTED plus explicit row locks where a decision depends on a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger("vimkit.store")

_SQLITE_BEGIN_OPTION = "vimkit_sqlite_begin"
# The begin hook sends nothing: the loop's kept writer begins and commits on the driver itself.
_SQLITE_NO_BEGIN = "none"


#: See :class:`_Checkpointer`: a WAL of this many frames (64 MiB of 4 KiB pages) is started over,
#: and a WAL file left bigger than WAL_SIZE_LIMIT bytes is trimmed to it when that happens.
WAL_RESTART_FRAMES = 16384
WAL_SIZE_LIMIT = 64 * 2**20
WAL_RESTART_WAIT_MS = 50
WAL_CATCH_UP_ROUNDS = 3
WAL_CATCH_UP_FRAMES = 256
BUSY_TIMEOUT_MS = 30000


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _configure_sqlite(engine: Engine, checkpoints: _Checkpointer | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see the begin hook).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if checkpoints is not None:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's thread does them
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement is its own transaction (Database.point_connection)
        if options.get(_SQLITE_BEGIN_OPTION) == _SQLITE_NO_BEGIN:
            return  # Database._kept_write_session
        # Straight to the driver: through SQLAlchemy's execution path the BEGIN cost more CPU
        # (about 60 µs) than a small write transaction's own statements.
        conn.connection.dbapi_connection.execute(f"BEGIN {options.get(_SQLITE_BEGIN_OPTION, 'DEFERRED')}")


def _plain_savepoints(engine: Engine) -> None:
    """Savepoint statements sent to the driver as they are. SQLAlchemy compiles each one afresh
    (they are not cached), and a group commit opens and releases one per write it holds: that
    compiling cost more than the rest of an allocation's transaction."""
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote

    def run(connection: Connection, statement: str) -> None:
        connection.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]

    dialect.do_savepoint = lambda connection, name: run(connection, f"SAVEPOINT {quote(name)}")  # type: ignore[method-assign]
    dialect.do_release_savepoint = (  # type: ignore[method-assign]
        lambda connection, name: run(connection, f"RELEASE SAVEPOINT {quote(name)}"))
    dialect.do_rollback_to_savepoint = (  # type: ignore[method-assign]
        lambda connection, name: run(connection, f"ROLLBACK TO SAVEPOINT {quote(name)}"))


class _Checkpointer:
    """WAL checkpoints on a thread of their own instead of inside a commit.

    SQLite's automatic checkpoint runs in whichever commit takes the WAL past 1,000 pages, and
    costs that commit the copy and two fsyncs (about 12 ms here). A write that runs on the event
    loop's thread (:meth:`Database.write_if_free`) would stall every request for that long. So
    the connections of a :class:`Database` on a SQLite file do not checkpoint; after every
    ``every`` commits this thread runs a PASSIVE checkpoint, which neither waits for nor blocks
    readers and writers (and releases the GIL while it copies and syncs).

    A PASSIVE checkpoint alone never lets the WAL start over under a steady stream of writes:
    SQLite writes from the start of the file again only when a write transaction begins with
    every frame already copied, and commits made while a checkpoint is copying leave some
    frames behind every time. At 500 allocations a second the WAL grew by about 75 KB per
    allocation without end (1.3 GB after 18,000), and its commits' CPU grew with it. So once
    the WAL holds ``restart_frames`` frames, the PASSIVE checkpoint that copied nearly all of
    them is followed by a RESTART one, and the next write starts the WAL over
    (``journal_size_limit`` then trims the file). The RESTART one holds writers back while it
    copies and syncs what the last commits added, so it holds this process's write lock: its
    writers then queue there (the loop's without holding the loop) instead of in SQLite's busy
    handler, which would put the loop's thread to sleep. To keep that short, PASSIVE rounds first
    copy what landed during the first one while that is a lot (at 500 allocations a second the
    lock was then held 1.5–26 ms, mostly for its two fsyncs, against 17–29 ms without them; a
    restart about every two seconds).
    """

    def __init__(self, engine: Engine, write_lock: Callable[[], Any], every: int = 200,
                 restart_frames: int = WAL_RESTART_FRAMES) -> None:
        self._engine = engine
        self._write_lock = write_lock  # the Database's current one (it may be replaced by a shared one)
        self._every = every
        self._restart_frames = restart_frames
        self.restarts = 0  # RESTART checkpoints run
        self.restarts_given_up = 0  # ... that found a reader still busy after WAL_RESTART_WAIT_MS
        self._commits = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self.done = 0  # checkpoints run by the thread

    def committed(self) -> None:
        self._commits += 1  # a lost increment under a race only delays a checkpoint a little
        if self._commits < self._every:
            return
        self._commits = 0
        with self._guard:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vimkit-wal-checkpoint", daemon=True)
                self._thread.start()
        self._wake.set()

    def checkpoint(self) -> None:
        with self._engine.connect() as connection:
            driver = connection.connection.dbapi_connection
            assert driver is not None
            _busy, frames, _copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < self._restart_frames:
                return
            # What the RESTART copies (and syncs) it does with writers held back: first let more
            # PASSIVE rounds copy what landed meanwhile, while that is much.
            for _round in range(WAL_CATCH_UP_ROUNDS):
                _busy, now, _copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                landed, frames = now - frames, now
                if landed < WAL_CATCH_UP_FRAMES:
                    break
            with self._write_lock():
                # Readers of older snapshots are waited for with the lock held: not for long (a
                # long scan may be one); if busy, the next round tries again.
                driver.execute(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
                try:
                    busy = driver.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                finally:
                    driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if busy:
                self.restarts_given_up += 1
            else:
                self.restarts += 1

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.checkpoint()
                self.done += 1
            except Exception:  # noqa: BLE001 - the next round retries; the WAL only grows meanwhile
                log.warning("WAL checkpoint failed", exc_info=True)

    def stop(self) -> None:
        with self._guard:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=30)
        try:
            self.checkpoint()  # leave a short WAL behind
        except Exception:  # noqa: BLE001
            log.warning("final WAL checkpoint failed", exc_info=True)


@contextmanager
def _committing(session: Session) -> Iterator[None]:
    """Commit when the block succeeds, roll back on any exception."""
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _open_for_good(connection: Connection, session: Session) -> None:
    """Put the loop's kept writer in a SQLAlchemy transaction that sends no BEGIN (see
    :meth:`Database._kept_write_session`), the session joined to it."""
    connection.begin()
    session.connection()


async def _acquire_in_thread(lock: Any) -> None:
    """Block a worker thread, not the loop, until ``lock`` is taken; it is then the caller's."""
    taken = asyncio.get_running_loop().run_in_executor(None, lock.acquire)
    try:
        await asyncio.shield(taken)
    except asyncio.CancelledError:
        # The thread still takes the lock: let it go as soon as it does.
        taken.add_done_callback(lambda done: done.cancelled() or done.exception() or lock.release())
        raise


# Set in ``session.info`` by a transaction that emitted notifications (vimkit.notify.outbox):
# after its commit, the ``after_notifications`` hooks wake the dispatchers.
NOTIFICATIONS_EMITTED_KEY = "vimkit_notifications_emitted"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Database:
    """Owns the engine; hands out read and write sessions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._checkpoints: _Checkpointer | None = None
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                path = Path(database)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    # Holds consumers' hashes and callback credentials: owner-only from the start
                    # (SQLite gives its -wal/-shm files the database file's permissions).
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.engine = create_engine(
                url,
                echo=echo,
                hide_parameters=True,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
                pool_size=16,
                max_overflow=16,
            )
            in_memory = not database or database == ":memory:" or "mode=memory" in url
            self._checkpoints = None if in_memory else _Checkpointer(self.engine, lambda: self._write_lock)
            _configure_sqlite(self.engine, self._checkpoints)
        else:
            self.engine = create_engine(
                url,
                echo=echo,
                hide_parameters=True,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=16,
                max_overflow=16,
                pool_pre_ping=True,
            )
        _plain_savepoints(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._local = threading.local()
        self._kept: list[Connection] = []
        # Called after a write transaction that emitted notifications commits (wakes dispatchers).
        self.after_notifications: list[Callable[[], None]] = []

    @property
    def write_lock(self) -> Any:
        """What this process's SQLite writers queue on (None on PostgreSQL)."""
        return self._write_lock

    @write_lock.setter
    def write_lock(self, lock: Any) -> None:
        # notify.workers replaces it with a lock shared by the VIM's processes.
        if self._write_lock is None:
            raise ValueError("only SQLite writers queue on a lock")
        self._write_lock = lock

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def point_connection(self) -> Iterator[Connection]:
        """A connection for one read statement.

        On SQLite the event loop's thread keeps one connection in autocommit mode: a single
        SELECT is its own read transaction, so it sees every commit before it, and the pool
        checkout, BEGIN and ROLLBACK that a session costs (more than the lookup itself) are gone.
        Elsewhere (PostgreSQL, worker threads: they are many, and each keeping a connection would
        drain the pool) a pooled connection is checked out as usual.
        """
        if self.dialect != "sqlite" or not _in_event_loop():
            with self.engine.connect() as connection:
                yield connection
            return
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.connection = connection
            self._kept.append(connection)
        yield connection

    async def point_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short read (a lookup by key) for the event loop.

        On SQLite (WAL) a read never waits for a writer, and a key lookup costs less than the
        worker-thread round trip that would carry it (a GET of one flavour took about 40 % less
        CPU inline), so it runs inline. PostgreSQL reads cross the network and go to a worker thread. Scans and pages stay
        in worker threads on both: they can take long enough to stall other requests.
        """
        if self.dialect == "sqlite":
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception.

        On SQLite the writers of this process queue on a Python lock first: SQLite's own busy
        handler waits by sleeping (up to 100 ms a turn), which under concurrent writers costs
        far more than the writes themselves.
        """
        if self._write_lock is None:
            with self._write_session() as session:
                yield session
            return
        with self._write_lock, self._write_session() as session:
            yield session

    @contextmanager
    def write_if_free(self) -> Iterator[Session | None]:
        """:meth:`write` on the calling thread if no writer of this process (or of the processes
        sharing its lock) holds the write lock right now; None otherwise, and always on PostgreSQL.

        For the event loop's thread: a small SQLite write transaction costs less than the worker
        thread round trip that would carry it (about 0.3 ms of CPU each way on these machines),
        and with the lock free it cannot wait for another writer of the VIM. Its commit never
        runs a WAL checkpoint (see :class:`_Checkpointer`).
        """
        lock = self._write_lock
        if lock is None or self._checkpoints is None or not lock.acquire(False):
            yield None
            return
        try:
            with self._kept_write_session() as session:
                yield session
        finally:
            lock.release()

    @asynccontextmanager
    async def write_on_loop(self) -> AsyncIterator[Session | None]:
        """:meth:`write_if_free` that waits for the writer instead of giving up: while another
        writer (a worker thread, the audit log, a delivery worker process) holds the lock, a
        worker thread waits for it and the loop goes on; then the transaction runs on the loop's
        thread, which must not await inside it. None on PostgreSQL.

        For the loop's frequent writers (group commits, fan-out): handing a busy writer's work to
        a worker thread instead cost it twice the CPU there (GIL trades in every SQLite call)."""
        lock = self._write_lock
        if lock is None or self._checkpoints is None:
            yield None
            return
        if not lock.acquire(False):
            await _acquire_in_thread(lock)
        try:
            with self._kept_write_session() as session:
                yield session
        finally:
            lock.release()

    @contextmanager
    def _kept_write_session(self) -> Iterator[Session]:
        """:meth:`_write_session` on a connection and session this thread keeps (SQLite only, the
        lock held): the loop's inline writes are many and small, and checking a connection out of
        the pool and setting up a session for each cost about 130 µs of CPU, as much as the
        statements of a completion.

        The kept session never leaves the SQLAlchemy transaction it was opened in; each write
        transaction is a ``BEGIN IMMEDIATE`` and a ``COMMIT`` sent to the driver, with what a
        session's commit would do by hand (flush what is pending, refuse a session a failed
        flush rolled back). SQLAlchemy's own begin, commit and close of a session and its
        connection cost about 100 µs of CPU per transaction, against 8 µs for the two
        statements, and the loop writes about one transaction per allocation. The session is
        emptied after every transaction; one that failed is rolled back on the driver and the
        session's transaction started afresh, so nothing carries over either way.
        """
        kept = getattr(self._local, "writer", None)
        if kept is None or kept[0].closed or kept[0].invalidated:
            connection = self.engine.connect().execution_options(**{_SQLITE_BEGIN_OPTION: _SQLITE_NO_BEGIN})
            session = Session(bind=connection, join_transaction_mode="control_fully", expire_on_commit=False)
            _open_for_good(connection, session)
            kept = self._local.writer = (connection, session)
            self._kept.append(connection)
        connection, session = kept
        driver = connection.connection.dbapi_connection
        assert driver is not None
        driver.execute("BEGIN IMMEDIATE")
        try:
            yield session
            if session.new or session.dirty or session.deleted:
                session.flush()
            if not session.is_active:  # a flush failed, and SQLAlchemy rolled everything back
                raise RuntimeError("the transaction was rolled back by a failed flush")
            driver.execute("COMMIT")
        except BaseException:
            self._local.writer = None  # rebuilt by the next transaction unless restarted here
            try:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                session.rollback()  # ends SQLAlchemy's transaction; the driver has none any more
                session.expunge_all()
                _open_for_good(connection, session)
                self._local.writer = kept
            except Exception:  # noqa: BLE001 - the caller gets the first error; a new writer is made
                log.warning("could not restart the kept write session", exc_info=True)
                connection.invalidate()
            raise
        finally:
            emitted = session.info.pop(NOTIFICATIONS_EMITTED_KEY, False)
            session.info.clear()
            session.expunge_all()
        self._committed(emitted)

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        with self._sessions() as session:
            if self.dialect == "sqlite":
                session.connection(execution_options={_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with _committing(session):
                yield session
            self._committed(session.info.pop(NOTIFICATIONS_EMITTED_KEY, False))

    def _committed(self, emitted_notifications: bool) -> None:
        if self._checkpoints is not None:
            self._checkpoints.committed()
        if emitted_notifications:
            for hook in self.after_notifications:
                hook()

    def refresh_planner_statistics(self) -> None:
        """Refresh SQLite's query planner statistics (``sqlite_stat1``); nothing on PostgreSQL,
        whose autovacuum analyzes tables as they change.

        Without statistics SQLite's planner guesses, and for a metadata filter of a tenant it
        guessed wrong: it walked the tenant's index over every compute instead of reading the few
        matching ones from the metadata index (15 ms against 0.6 ms over 100,000 computes).
        ``analysis_limit`` bounds the work to about 1,000 entries per index: 4 ms on 100,000
        computes, against 150 ms for a full ANALYZE, and the estimates lead to the same plans.
        (``PRAGMA optimize`` would analyze nothing here: before SQLite 3.46 it only considers the
        tables the same connection has queried.) The statement writes, so it queues with the
        other writers of this process.
        """
        if self.dialect != "sqlite":
            return
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        with lock, self.engine.connect() as connection:
            driver = connection.connection.dbapi_connection
            assert driver is not None
            driver.execute("PRAGMA analysis_limit=1000")
            driver.execute("ANALYZE")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        for connection in self._kept:
            connection.close()
        self._kept.clear()
        self.engine.dispose()

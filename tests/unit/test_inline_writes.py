"""Small SQLite write transactions on the event loop's thread, and the WAL checkpoints that
moved to a thread of their own so that such a commit never pays for one."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import String, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vimkit.notify.workers import share_sqlite_writes
from vimkit.store import db as db_module
from vimkit.store.db import WAL_SIZE_LIMIT, Database
from vimkit.store.group_commit import INLINE_BATCH, Demand, GroupCommit


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    __tablename__ = "plain_items"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)


def _database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'inline.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    return database


def _assert_lock_free(database: Database) -> None:
    assert database.write_lock.acquire(False)
    database.write_lock.release()


def _names(database: Database) -> list[str]:
    with database.read() as session:
        return list(session.scalars(text("SELECT name FROM items ORDER BY id")))


def test_write_if_free_runs_here_only_while_no_writer_holds_the_lock(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        with database.write_if_free() as session:
            assert session is not None
            session.execute(text("INSERT INTO items (name) VALUES ('here')"))
        assert _names(database) == ["here"]

        held, release = threading.Event(), threading.Event()

        def writer() -> None:
            with database.write() as session:
                session.execute(text("INSERT INTO items (name) VALUES ('thread')"))
                held.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert held.wait(10)
        with database.write_if_free() as session:
            assert session is None  # the caller must go and queue elsewhere, not wait here
        release.set()
        thread.join(10)
        assert _names(database) == ["here", "thread"]

        # A failure rolls back and lets the lock go.
        with pytest.raises(RuntimeError):
            with database.write_if_free() as session:
                assert session is not None
                session.execute(text("INSERT INTO items (name) VALUES ('lost')"))
                raise RuntimeError("boom")
        assert _names(database) == ["here", "thread"]
        _assert_lock_free(database)
    finally:
        database.dispose()


def test_write_if_free_respects_the_lock_shared_with_delivery_workers(tmp_path: Path) -> None:
    ours, theirs = _database(tmp_path), Database(f"sqlite:///{tmp_path / 'inline.db'}")
    share_sqlite_writes(ours)
    share_sqlite_writes(theirs)  # another process's view of the same lock file
    try:
        with theirs.write() as session:
            session.execute(text("INSERT INTO items (name) VALUES ('worker')"))
            with ours.write_if_free() as inline:
                assert inline is None
        with ours.write_if_free() as inline:
            assert inline is not None
            inline.execute(text("INSERT INTO items (name) VALUES ('server')"))
        assert _names(ours) == ["worker", "server"]
    finally:
        ours.dispose()
        theirs.dispose()


def test_only_sqlite_writes_inline(database_url: str) -> None:
    database = Database(database_url)
    try:
        with database.write_if_free() as session:
            # PostgreSQL has no process-wide writer to find free, and its round trips would stall
            # the loop: its writes always go to a worker thread.
            assert (session is not None) == (database.dialect == "sqlite")
    finally:
        database.dispose()


def test_group_commit_writes_small_batches_on_the_loop_and_big_ones_in_a_thread(tmp_path: Path) -> None:
    database = _database(tmp_path)
    commits = GroupCommit(database, inline_budget=0)  # by size alone; the budget: the next test
    loop_thread = threading.get_ident()

    def insert(name: str):  # type: ignore[no-untyped-def]
        def work(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": name})
            return threading.get_ident()
        return work

    async def scenario() -> None:
        assert await commits.run(insert("alone")) == loop_thread
        # One batch bigger than INLINE_BATCH: queued together before the writer task runs.
        many = [commits.run(insert(f"many-{index}")) for index in range(INLINE_BATCH * 3)]
        threads = await asyncio.gather(*many)
        assert loop_thread not in threads[: INLINE_BATCH * 2]
        # A failing work fails alone, inline as in a thread.
        results = await asyncio.gather(commits.run(insert("alone")), commits.run(insert("twice")),
                                       return_exceptions=True)
        assert isinstance(results[0], Exception) and results[1] == loop_thread

    try:
        asyncio.run(scenario())
        names = _names(database)
        assert names[0] == "alone" and names[-1] == "twice" and len(names) == INLINE_BATCH * 3 + 2
    finally:
        database.dispose()


def test_group_commit_keeps_batches_on_the_loop_while_their_estimated_time_fits_the_budget(tmp_path: Path) -> None:
    database = _database(tmp_path)
    commits = GroupCommit(database, inline_budget=0.02)
    loop_thread = threading.get_ident()

    def insert(name: str, busy: float = 0.0):  # type: ignore[no-untyped-def]
        def work(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": name})
            until = time.perf_counter() + busy
            while time.perf_counter() < until:
                pass
            return threading.get_ident()
        return work

    async def batch(prefix: str, size: int, busy: float = 0.0) -> set[int]:
        return set(await asyncio.gather(*(commits.run(insert(f"{prefix}-{i}", busy)) for i in range(size))))

    async def scenario() -> None:
        # Cheap works: a batch of 20, beyond INLINE_BATCH, still fits 20 ms once they are measured.
        for round_ in range(5):
            await batch(f"warm{round_}", INLINE_BATCH)
        assert commits.work_seconds < 0.001
        assert await batch("cheap", 20) == {loop_thread}
        # Works of 3 ms each: once measured, 20 of them (60 ms) would hold the loop too long.
        for round_ in range(8):
            await batch(f"slow{round_}", 2, busy=0.003)
        assert commits.work_seconds > 0.002
        assert loop_thread not in await batch("heavy", 20, busy=0.003)
        assert await batch("few", INLINE_BATCH, busy=0.003) == {loop_thread}  # small batches stay

    try:
        asyncio.run(scenario())
        assert len(_names(database)) == 5 * INLINE_BATCH + 20 + 8 * 2 + 20 + INLINE_BATCH
    finally:
        database.dispose()


def test_commits_do_not_checkpoint_the_checkpointer_thread_does(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        with database.read() as session:
            assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        checkpoints = database._checkpoints
        assert checkpoints is not None
        wal = tmp_path / "inline.db-wal"
        for index in range(450):
            with database.write() as session:
                session.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": f"n{index}"})
        for _ in range(200):
            if checkpoints.done >= 2:
                break
            threading.Event().wait(0.02)
        assert checkpoints.done >= 2
        # A PASSIVE checkpoint copied the WAL into the database: a new reader sees everything.
        assert len(_names(database)) == 450
        assert wal.exists()
    finally:
        database.dispose()
    # dispose checkpoints once more and stops the thread
    assert checkpoints._thread is not None and not checkpoints._thread.is_alive()


def _wal_frames(database: Database) -> int:
    """Frames in the WAL since it last started over (a PASSIVE checkpoint reports them)."""
    with database.engine.connect() as connection:
        return connection.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def test_the_wal_starts_over_although_commits_land_while_a_checkpoint_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a steady stream of writes some commit always lands while a PASSIVE checkpoint copies
    (here a reader holding its snapshot stands in for it: the checkpoint cannot copy past it), so
    no write ever began with every frame copied and the WAL grew without end. A checkpoint that
    finds the WAL long enough restarts it, waiting for that reader, and the next write begins the
    WAL from its start again."""
    monkeypatch.setattr(db_module, "WAL_RESTART_WAIT_MS", 5000)  # the reader below ends after 300 ms
    database = _database(tmp_path)
    try:
        checkpoints = database._checkpoints
        assert checkpoints is not None
        checkpoints._restart_frames = 50
        for index in range(60):
            with database.write() as session:
                session.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": f"n{index}"})
        reader = sqlite3.connect(tmp_path / "inline.db", isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (60,)
        with database.write() as session:  # after the reader's snapshot
            session.execute(text("INSERT INTO items (name) VALUES ('late')"))
        finishing = threading.Timer(0.3, reader.rollback)
        finishing.start()
        checkpoints.checkpoint()
        finishing.join()
        assert checkpoints.restarts == 1
        with database.write() as session:
            session.execute(text("INSERT INTO items (name) VALUES ('after')"))
        assert _wal_frames(database) <= 3  # one small transaction's pages, at the WAL's start
        assert len(_names(database)) == 62
        with database.read() as session:
            assert session.execute(text("PRAGMA journal_size_limit")).scalar() == WAL_SIZE_LIMIT
        reader.close()
    finally:
        database.dispose()


def _frames_behind_a_reader(database: Database, tmp_path: Path) -> sqlite3.Connection:
    """A commit past the snapshot of a reader left open (returned), with checkpoints restarting
    the WAL at once."""
    assert database._checkpoints is not None
    database._checkpoints._restart_frames = 1
    with database.write() as session:
        session.execute(text("INSERT INTO items (name) VALUES ('first')"))
    reader = sqlite3.connect(tmp_path / "inline.db", isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM items").fetchone()
    with database.write() as session:
        session.execute(text("INSERT INTO items (name) VALUES ('second')"))
    return reader


def test_a_restarting_checkpoint_holds_the_write_lock_so_the_loop_never_sleeps_in_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the RESTART checkpoint waits for a reader, writers wait on the process's write lock:
    ``write_if_free`` (the loop's) gets None at once instead of sleeping in SQLite's busy handler."""
    monkeypatch.setattr(db_module, "WAL_RESTART_WAIT_MS", 5000)
    database = _database(tmp_path)
    try:
        checkpoints = database._checkpoints
        assert checkpoints is not None
        reader = _frames_behind_a_reader(database, tmp_path)
        checkpointing = threading.Thread(target=checkpoints.checkpoint)
        checkpointing.start()
        for _ in range(200):
            if database.write_lock.locked():
                break
            time.sleep(0.005)
        started = time.perf_counter()
        with database.write_if_free() as session:
            assert session is None
        assert time.perf_counter() - started < 0.05
        reader.rollback()
        checkpointing.join(timeout=10)
        assert not checkpointing.is_alive() and checkpoints.restarts == 1
        _assert_lock_free(database)
        reader.close()
    finally:
        database.dispose()


def test_a_restarting_checkpoint_gives_up_on_a_long_reader_and_frees_the_writers(tmp_path: Path) -> None:
    """A long scan may hold an old snapshot for seconds: the RESTART checkpoint waits for it only
    WAL_RESTART_WAIT_MS with the write lock held, then lets writers go; a later round retries."""
    database = _database(tmp_path)
    try:
        checkpoints = database._checkpoints
        assert checkpoints is not None
        reader = _frames_behind_a_reader(database, tmp_path)
        started = time.perf_counter()
        checkpoints.checkpoint()
        assert time.perf_counter() - started < 5  # not the 30 s of the connections' busy timeout
        assert (checkpoints.restarts, checkpoints.restarts_given_up) == (0, 1)
        _assert_lock_free(database)
        with database.write() as session:
            session.execute(text("INSERT INTO items (name) VALUES ('third')"))
        reader.rollback()
        reader.close()
        checkpoints.checkpoint()
        assert checkpoints.restarts == 1
    finally:
        database.dispose()


def test_plain_works_fail_alone_and_orm_changes_they_leave_follow_their_savepoint(database_url: str) -> None:
    """``plain`` works get a savepoint of two driver statements instead of an ORM nested
    transaction; what each commits or rolls back is the same as with one."""
    database = Database(database_url)
    with database.write() as session:
        session.execute(text("CREATE TABLE plain_items (name VARCHAR(40) PRIMARY KEY)"))
    commits = GroupCommit(database)

    def insert(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO plain_items (name) VALUES (:name)"), {"name": name})
            if fail:
                raise RuntimeError(name)
            return name
        return work

    def orm_add(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(session):  # type: ignore[no-untyped-def]
            session.add(Item(name=name))
            if fail:
                raise RuntimeError(name)
            return name
        return work

    async def scenario() -> list[object]:
        # One batch (queued before its writer runs), mixing plain and ORM-savepoint works; on
        # PostgreSQL the duplicate aborts the transaction until its savepoint is rolled back.
        return await asyncio.gather(
            commits.run(insert("a"), plain=True),
            commits.run(insert("b", fail=True), plain=True),
            commits.run(insert("a"), plain=True),              # duplicate key: fails alone
            commits.run(insert("c")),                          # an ORM nested transaction
            commits.run(orm_add("d"), plain=True),             # left ORM changes: flushed in its savepoint
            commits.run(orm_add("e", fail=True), plain=True),  # failed: its object is not written
            commits.run(insert("f"), plain=True),
            return_exceptions=True)

    try:
        for inline in (False, True):
            if inline:  # a batch small enough to be written on the loop (SQLite)
                with database.write() as session:
                    session.execute(text("DELETE FROM plain_items"))
                results = asyncio.run(asyncio.wait_for(_small_batch(commits, insert), 30))
                assert isinstance(results[1], Exception) and [results[0], results[2]] == ["x", "z"]
                with database.read() as session:
                    assert list(session.scalars(text("SELECT name FROM plain_items ORDER BY name"))) == ["x", "z"]
                continue
            results = asyncio.run(scenario())
            assert results[0] == "a" and results[3] == "c" and results[4] == "d" and results[6] == "f"
            assert [type(results[i]) is not str for i in (1, 2, 5)] == [True, True, True]
            with database.read() as session:
                names = list(session.scalars(text("SELECT name FROM plain_items ORDER BY name")))
            assert names == ["a", "c", "d", "f"]
    finally:
        database.dispose()


async def _small_batch(commits: GroupCommit, insert):  # type: ignore[no-untyped-def]
    return await asyncio.gather(commits.run(insert("x"), plain=True), commits.run(insert("y", True), plain=True),
                                commits.run(insert("z"), plain=True), return_exceptions=True)


def test_write_on_loop_waits_for_a_busy_writer_without_holding_the_loop(tmp_path: Path) -> None:
    database = _database(tmp_path)
    commits = GroupCommit(database)
    loop_thread = threading.get_ident()
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:  # e.g. the audit log's thread
        with database.write() as session:
            session.execute(text("INSERT INTO items (name) VALUES ('other')"))
            held.set()
            release.wait(10)

    def insert(session):  # type: ignore[no-untyped-def]
        session.execute(text("INSERT INTO items (name) VALUES ('mine')"))
        return threading.get_ident()

    async def scenario() -> None:
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert await asyncio.to_thread(held.wait, 10)
        write = asyncio.ensure_future(commits.run(insert))
        ticks = 0
        while ticks < 20:  # the loop goes on while the write waits for the lock
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
        release.set()
        assert await write == loop_thread  # then written on the loop, not handed to a thread
        await asyncio.to_thread(thread.join, 10)

    try:
        asyncio.run(scenario())
        assert _names(database) == ["other", "mine"]
    finally:
        database.dispose()


def test_a_write_cancelled_while_waiting_for_the_lock_leaves_it_free(tmp_path: Path) -> None:
    database = _database(tmp_path)
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with database.write():
            held.set()
            release.wait(10)

    async def wait_and_write() -> None:
        async with database.write_on_loop() as session:
            assert session is not None
            session.execute(text("INSERT INTO items (name) VALUES ('never')"))

    async def scenario() -> None:
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert await asyncio.to_thread(held.wait, 10)
        waiting = asyncio.ensure_future(wait_and_write())
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.to_thread(thread.join, 10)
        # The waiting thread took the lock after the cancellation and let it go again.
        assert await asyncio.to_thread(database.write_lock.acquire, True, 5)
        database.write_lock.release()

    try:
        asyncio.run(scenario())
        assert _names(database) == []
    finally:
        database.dispose()


def test_the_loops_kept_write_session_starts_empty_every_time(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        with database.write_if_free() as session:
            assert session is not None
            session.add(Item(name="kept"))  # a table this test creates below
            session.info["left"] = True
            first = session
            _Base.metadata.create_all(session.connection())
        with pytest.raises(RuntimeError):
            with database.write_if_free() as session:
                session.add(Item(name="rolled-back"))
                session.flush()
                raise RuntimeError("fails after writing")
        # A transaction whose only work fails at once inside its savepoint (a group-commit work).
        with database.write_if_free() as session:
            with pytest.raises(RuntimeError), session.begin_nested():
                raise RuntimeError("fails before any statement")
        with database.write_if_free() as session:
            session.add(Item(name="after-savepoint"))
        with database.write_if_free() as session:
            assert session is first and not session.info and not list(session)  # nothing carried over
            assert session.connection().in_transaction()
            assert sorted(session.scalars(text("SELECT name FROM plain_items"))) == ["after-savepoint", "kept"]
        _assert_lock_free(database)
    finally:
        database.dispose()


def test_a_failed_flush_of_the_kept_session_commits_nothing_and_the_next_transaction_works(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        with database.write_if_free() as session:
            _Base.metadata.create_all(session.connection())
            session.add(Item(name="first"))
        with pytest.raises(Exception, match="UNIQUE|IntegrityError|rolled back"):
            with database.write_if_free() as session:
                session.execute(text("INSERT INTO items (name) VALUES ('written-before')"))
                session.add(Item(name="first"))  # flushed on the way out: the primary key is taken
        with pytest.raises(RuntimeError, match="rolled back by a failed flush"):
            with database.write_if_free() as session:
                session.execute(text("INSERT INTO items (name) VALUES ('also-before')"))
                session.add(Item(name="first"))
                with pytest.raises(IntegrityError):
                    session.flush()  # fails inside, and the caller swallows it
        assert _names(database) == []
        with database.write_if_free() as session:
            session.add(Item(name="second"))
            session.execute(text("INSERT INTO items (name) VALUES ('later')"))
        assert _names(database) == ["later"]
        with database.read() as session:
            assert sorted(session.scalars(text("SELECT name FROM plain_items"))) == ["first", "second"]
        _assert_lock_free(database)
    finally:
        database.dispose()


def test_a_lazy_work_waits_for_an_eager_one_only_while_other_write_requests_are_served(tmp_path: Path) -> None:
    database = _database(tmp_path)
    lazy_wait = 0.3  # generous, so that a slow machine cannot end the wait the test relies on
    demand = Demand()
    commits = GroupCommit(database, lazy_wait=lazy_wait, demand=demand)
    batches: list[list[str]] = []
    writing = commits._run_works

    def counting(session, works):  # type: ignore[no-untyped-def]
        batches.append([work.__name__ for work, _plain in works])
        return writing(session, works)

    commits._run_works = counting  # type: ignore[method-assign]

    def insert(name: str):  # type: ignore[no-untyped-def]
        def work(session):  # type: ignore[no-untyped-def]
            session.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": name})
            return name
        work.__name__ = name
        return work

    async def written_at_once(name: str) -> None:
        started = asyncio.get_running_loop().time()
        assert await commits.run(insert(name), lazy=True) == name
        assert asyncio.get_running_loop().time() - started < lazy_wait
        assert batches[-1] == [name]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # No request, or only the one waiting for this work: nobody else can bring company.
        await written_at_once("idle")
        demand.requests = 1
        await written_at_once("own-request-only")
        # Another write request is being served: the lazy work waits for its eager work...
        demand.requests = 2
        lazy = asyncio.ensure_future(commits.run(insert("completion-1"), lazy=True))
        await asyncio.sleep(0.01)
        assert not lazy.done()
        await commits.run(insert("claim-2"))
        assert await lazy == "completion-1"
        assert batches[-1] == ["completion-1", "claim-2"]
        # ... but no longer than lazy_wait when none comes.
        started = loop.time()
        assert await commits.run(insert("completion-2"), lazy=True) == "completion-2"
        assert loop.time() - started >= lazy_wait * 0.9
        assert batches[-1] == ["completion-2"]
        # When every request being served may be waiting on a lazy work already queued, nothing
        # else can come: the last of them starts the write at once, for all.
        first = asyncio.ensure_future(commits.run(insert("completion-3"), lazy=True))
        await asyncio.sleep(0.01)
        assert not first.done()
        started = loop.time()
        assert await commits.run(insert("completion-4"), lazy=True) == "completion-4"
        assert loop.time() - started < lazy_wait and await first == "completion-3"
        assert batches[-1] == ["completion-3", "completion-4"]
        # Without a Demand to ask, lazy works never wait.
        commits.demand = None
        await written_at_once("no-demand")

    try:
        asyncio.run(scenario())
        assert sorted(_names(database)) == sorted(["idle", "own-request-only", "completion-1", "claim-2",
                                                   "completion-2", "completion-3", "completion-4", "no-demand"])
    finally:
        database.dispose()

"""Point reads on SQLite: one autocommit connection kept by the event loop's thread, which still
sees every commit (no read transaction left open), and ordinary pooled connections elsewhere."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from vimkit.store.db import Database
from vimkit.store.migrate import upgrade
from vimkit.store.models import FlavourRow
from vimkit.store.repository import Visibility, read_document


def _database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'v.db'}")
    upgrade(database)
    return database


def _write(database: Database, flavour_id: str, version: int, group: str = "rg-a", public: bool = False) -> None:
    now = datetime.now(UTC)
    with database.write() as session:
        row = session.query(FlavourRow).filter_by(id=flavour_id).one_or_none()
        if row is None:
            session.add(FlavourRow(id=flavour_id, resource_group_id=group, is_public=public, created_at=now,
                                   updated_at=now, version=version, body={"flavourId": flavour_id, "v": version}))
        else:
            row.version, row.body = version, {"flavourId": flavour_id, "v": version}


def test_the_loop_thread_keeps_one_connection_and_sees_every_commit(tmp_path: Path) -> None:
    database = _database(tmp_path)
    mine = Visibility("rg-a")

    async def scenario() -> None:
        with database.point_connection() as first:
            pass
        assert read_document(database, FlavourRow, "f1", mine) is None
        for version in range(1, 6):
            # Written by another thread's pooled connection, read back at once on the kept one.
            await asyncio.to_thread(_write, database, "f1", version)
            row = read_document(database, FlavourRow, "f1", mine)
            assert row is not None and row.version == version and row.body["v"] == version
        with database.point_connection() as again:
            assert again is first

    asyncio.run(scenario())
    database.dispose()


def test_worker_threads_do_not_keep_connections(tmp_path: Path) -> None:
    database = _database(tmp_path)
    _write(database, "f1", 1)
    seen: list[object] = []

    def read() -> None:
        with database.point_connection() as connection:
            seen.append(connection)
        assert read_document(database, FlavourRow, "f1", Visibility("rg-a")) is not None

    threads = [threading.Thread(target=read) for _ in range(40)]  # more threads than the pool holds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == 40 and all(connection.closed for connection in seen)
    database.dispose()


def test_visibility_of_a_point_read(tmp_path: Path) -> None:
    database = _database(tmp_path)
    _write(database, "private", 1, group="rg-a")
    _write(database, "public", 1, group="rg-a", public=True)
    assert read_document(database, FlavourRow, "private", Visibility("rg-b")) is None
    assert read_document(database, FlavourRow, "public", Visibility("rg-b")) is not None
    assert read_document(database, FlavourRow, "private", Visibility("rg-b", all_groups=True)) is not None
    database.dispose()

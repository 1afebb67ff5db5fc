"""Prepared statements store and read exactly what SQLAlchemy's own execution would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, func, insert, select, update
from sqlalchemy.types import JSON

from vimkit.store.db import Database
from vimkit.store.prepared import Prepared

metadata = MetaData()
things = Table(
    "prepared_things", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False, default="plain"),
)




@pytest.fixture
def database(database_url: str):
    database = Database(database_url)  # a fresh database of each backend (tests/conftest.py)
    metadata.create_all(database.engine)
    yield database
    database.engine.dispose()


def test_rows_written_and_read_match_sqlalchemy(database: Database) -> None:
    moment = datetime(2026, 11, 26, 5, 6, 7, 891011, tzinfo=UTC)
    body = {"name": "é ✓", "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    prepared_insert = Prepared(insert(things))
    by_id = select(things.c.id, things.c.body, things.c.created_at, things.c.kind).where(
        things.c.id == bindparam("b_id"))
    prepared_select = Prepared(by_id)
    with database.write() as session:
        prepared_insert.execute(session.connection(), {"id": "a", "body": body, "created_at": moment, "kind": "x"})
        session.connection().execute(insert(things), [{"id": "b", "body": body, "created_at": moment, "kind": "x"}])
    with database.write() as session:
        connection = session.connection()
        mine = prepared_select.first(connection, {"b_id": "a"})
        theirs = connection.execute(by_id, {"b_id": "b"}).first()
        assert mine is not None and theirs is not None
        assert (mine.body, mine.created_at, mine.kind) == (theirs.body, theirs.created_at, theirs.kind)
        assert mine.body == body
        assert prepared_select.first(connection, {"b_id": "nobody"}) is None
        # An UPDATE with a bound key and a changed JSON document.
        change = Prepared(update(things).where(things.c.id == bindparam("b_id")))
        change.execute(connection, {"b_id": "a", "body": {"changed": True}})
        assert prepared_select.first(connection, {"b_id": "a"}).body == {"changed": True}


def test_a_column_default_is_left_to_sqlalchemy(database: Database) -> None:
    prepared_insert = Prepared(insert(things))
    with database.write() as session:
        # "kind" is not given: its Python-side default must still be applied.
        prepared_insert.execute(session.connection(), {"id": "c", "body": {}, "created_at": datetime.now(UTC)})
    with database.read() as session:
        assert session.execute(select(things.c.kind).where(things.c.id == "c")).scalar_one() == "plain"


def test_it_runs_in_the_callers_transaction(database: Database) -> None:
    prepared_insert = Prepared(insert(things))
    with pytest.raises(RuntimeError):
        with database.write() as session:
            prepared_insert.execute(session.connection(), {"id": "d", "body": {}, "created_at": datetime.now(UTC),
                                                          "kind": "x"})
            raise RuntimeError("roll back")
    with database.read() as session:
        assert session.execute(select(things.c.id).where(things.c.id == "d")).first() is None


def test_all_rows_in_order_with_the_statements_own_limit_and_an_aggregate(database: Database) -> None:
    moment = datetime(2026, 11, 26, 5, 6, 7, tzinfo=UTC)
    with database.write() as session:
        session.connection().execute(insert(things), [
            {"id": f"r{index}", "body": {"index": index}, "created_at": moment, "kind": ("even", "odd")[index % 2]}
            for index in range(5)])
    odd_first = select(things.c.id, things.c.body, things.c.created_at).where(
        things.c.kind == bindparam("kind")).order_by(things.c.seq.desc())
    with database.read() as session:
        connection = session.connection()
        mine = Prepared(odd_first).all(connection, {"kind": "odd"})
        assert mine == list(connection.execute(odd_first, {"kind": "odd"}).all())
        assert [(row.id, row.body) for row in mine] == [("r3", {"index": 3}), ("r1", {"index": 1})]
        assert [row.id for row in Prepared(odd_first.limit(1)).all(connection, {"kind": "odd"})] == ["r3"]
        assert Prepared(odd_first).all(connection, {"kind": "none"}) == []
        assert Prepared(select(func.max(things.c.seq))).first(connection)[0] == 5

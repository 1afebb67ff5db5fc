"""Prepared statements store and read exactly what SQLAlchemy's own execution would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, insert, select, update
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

"""The migrations build exactly the schema the models declare, on each backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import vimkit.app  # noqa: F401 - imports every model module
from vimkit.store.db import Database
from vimkit.store.migrate import upgrade
from vimkit.store.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database)
        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        database.dispose()
    assert diff == []

"""Core statements compiled once and run on the driver's cursor.

SQLAlchemy's ``Connection.execute`` spends more Python time per statement (cache key, execution
context, result set-up) than SQLite spends running a small INSERT, and an allocation runs half a
dozen such statements. :class:`Prepared` compiles a statement once per dialect and set of
parameter names, then runs it on the DBAPI cursor of the same connection, inside the same
transaction, passing each value through the bind processor SQLAlchemy would have used (JSON,
DateTime) and each result column through its result processor. A statement it cannot run
faithfully this way (a value it would have to default, an expanding parameter) goes through
``Connection.execute`` as before.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ClauseElement


_FROM_PARAMS = object()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameter names in order (positional styles) or those used (named)
    positional: bool
    fixed: tuple[Any, ...]  # per name: the statement's own value, or _FROM_PARAMS
    bind: tuple[Callable[[Any], Any] | None, ...]  # per name
    result: tuple[Callable[[Any], Any] | None, ...] | None  # per column of a SELECT
    row: Any  # the named tuple type of a SELECT's rows


class Prepared:
    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled | None] = {}

    def _compile(self, dialect: Dialect, keys: frozenset[str]) -> _Compiled | None:
        compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys))
        if compiled.literal_execute_params or compiled.post_compile_params:
            return None
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
        fixed = []
        for name in names:
            if name in keys:
                fixed.append(_FROM_PARAMS)
                continue
            bind = compiled.binds[name]
            if bind.callable is None and bind.value is None:
                return None  # a column default SQLAlchemy would fill in: leave it to SQLAlchemy
            fixed.append(bind.effective_value)
        processors = compiled._bind_processors
        result = row = None
        if compiled._result_columns and not (compiled.isinsert or compiled.isupdate or compiled.isdelete):
            columns = compiled._result_columns
            result = tuple(column[3]._cached_result_processor(dialect, None) for column in columns)
            row = namedtuple("PreparedRow", [column[0] for column in columns])  # type: ignore[misc]
        return _Compiled(compiled.string, names, positional, tuple(fixed),
                         tuple(processors.get(name) for name in names), result, row)

    def _for(self, connection: Connection, params: Mapping[str, Any]) -> _Compiled | None:
        dialect = connection.dialect
        key = (dialect.name, frozenset(params))
        try:
            return self._compiled[key]
        except KeyError:
            compiled = self._compiled[key] = self._compile(dialect, key[1])
            return compiled

    def _run(self, connection: Connection, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = []
        for name, fixed, process in zip(compiled.names, compiled.fixed, compiled.bind):
            value = params[name] if fixed is _FROM_PARAMS else fixed
            values.append(process(value) if process is not None else value)
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(compiled.sql, values if compiled.positional else dict(zip(compiled.names, values)))
        return cursor

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run an INSERT, UPDATE or DELETE."""
        compiled = self._for(connection, params)
        if compiled is None:
            connection.execute(self.statement, dict(params))
            return
        self._run(connection, compiled, params).close()

    def first(self, connection: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first row of a SELECT, its columns converted as SQLAlchemy would, or None."""
        params = params or {}
        compiled = self._for(connection, params)
        if compiled is None or compiled.result is None:
            return connection.execute(self.statement, dict(params)).first()
        cursor = self._run(connection, compiled, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else _converted(compiled, row)

    def all(self, connection: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every row of a SELECT, their columns converted as SQLAlchemy would."""
        params = params or {}
        compiled = self._for(connection, params)
        if compiled is None or compiled.result is None:
            return list(connection.execute(self.statement, dict(params)).all())
        cursor = self._run(connection, compiled, params)
        try:
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return [_converted(compiled, row) for row in rows]


def _converted(compiled: _Compiled, row: Any) -> Any:
    assert compiled.result is not None
    return compiled.row._make(value if process is None else process(value)
                              for value, process in zip(row, compiled.result))

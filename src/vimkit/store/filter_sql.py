"""SOL 013 attribute filters and sort keys compiled to SQLAlchemy Core, for SQLite and PostgreSQL.

The semantics are those documented in :mod:`vimkit.api.filters` (whose ``evaluate`` is the
reference the property tests compare against). The compiled SQL is the same on both databases:
documents are read with SQLAlchemy's JSON path indexing (``JSON_EXTRACT`` / ``#>``), date-times
are turned into integer microsecond keys with portable string and integer arithmetic, ``cont``
uses ``replace()`` (no LIKE, so ``%`` and ``_`` are literal and matching is case-sensitive on
both), PostgreSQL strings are compared with ``COLLATE "C"`` (code-point order, as SQLite's
BINARY and Python), and the only dialect-specific pieces are three small set-returning functions
(:class:`json_array_items` and friends) rendered as ``json_each`` on SQLite and
``jsonb_array_elements``/``jsonb_each_text`` on PostgreSQL. Every value is a bound parameter.

A string map outside arrays (``metadata``) may have an index (:class:`MapLookup`, e.g.
``vimkit.store.map_index.MapIndex``): ``eq`` and ``in`` on one of its keys — and so ``neq`` and
``nin``, their complements — are answered by it; every other operator, and sorting, read the
document.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
import ipaddress
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin
from uuid import UUID

import sqlalchemy as sa
from pydantic import AnyUrl, BaseModel
from pydantic.networks import IPvAnyAddress, IPvAnyInterface, IPvAnyNetwork
from sqlalchemy import ColumnElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from vimkit.api.filters import (
    COMPARISONS, NEGATIONS, ORDERING_OPERATORS, Condition, FilterError, FilterExpr, datetime_key,
    typed_values,
)

FieldKind = Literal["string", "integer", "number", "boolean", "datetime", "enum"]
SUPPORTED_DIALECTS = frozenset({"sqlite", "postgresql"})

#: types pydantic writes as JSON strings
_STRING_TYPES: tuple[type, ...] = (
    str, UUID, AnyUrl, IPvAnyAddress, IPvAnyInterface, IPvAnyNetwork, ipaddress.IPv4Address,
    ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,  # (interfaces: addresses)
)
_SCALAR_KINDS: tuple[tuple[type, FieldKind], ...] = (
    (bool, "boolean"), (int, "integer"), (float, "number"), (datetime, "datetime"),
)
_ARRAY_ORIGINS = (list, tuple, set, frozenset, Sequence)
#: Text compared in code-point order on both databases (SQLite's default BINARY collation).
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")


@dataclass(frozen=True)
class FieldSpec:
    """Where and how a filterable scalar attribute is stored.

    ``json_path`` is the attribute's path in the JSON document (also used by ``evaluate``).
    ``column``, when set, is a dedicated column holding the same value, used by SQL instead
    (a date-time column must hold UTC: SQLite's DateTime type keeps no offset).
    ``array_path`` is the prefix of ``json_path`` that is a JSON array (the rest is inside each
    element; equal to ``json_path`` for an array of scalars). ``map_path`` is the prefix that is
    a string map (``metadata``), the next name being a free key.
    """

    kind: FieldKind
    json_path: tuple[str, ...]
    enum_values: tuple[str, ...] | None = None
    column: ColumnElement[Any] | None = field(default=None, compare=False)
    array_path: tuple[str, ...] | None = None
    map_path: tuple[str, ...] | None = None


class MapLookup(Protocol):
    """An index of a string map of the documents (see ``vimkit.store.map_index``)."""

    def condition(self, key: str, values: Sequence[str], negated: bool = False) -> ColumnElement[bool]:
        """The documents whose map has ``key`` with one of ``values``, or with ``negated`` every
        other document (those without ``key`` included); never NULL."""
        ...


#: the operators a map index answers (after NEGATIONS: neq and nin are their complements)
_MAP_INDEX_OPERATORS = frozenset({"eq", "in"})


# --------------------------------------------------------------------------- schema tree


@dataclass(frozen=True)
class _Scalar:
    kind: FieldKind
    enum_values: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Child:
    node: _Node
    optional: bool  # lower cardinality bound 0: may be absent or null


@dataclass(frozen=True)
class _Object:
    children: Mapping[str, _Child]


@dataclass(frozen=True)
class _Array:
    item: _Node


@dataclass(frozen=True)
class _Map:
    value: _Node


@dataclass(frozen=True)
class _Opaque:
    """Not filterable; ``structured`` when it is still a JSON object (hence selectable)."""

    why: str
    structured: bool = False


_Node = Union[_Scalar, _Object, _Array, _Map, _Opaque]


class _TreeBuilder:
    """Turns pydantic v2 model annotations into the JSON shape the documents have."""

    def __init__(self, map_fields: frozenset[str]) -> None:
        self.map_fields = map_fields
        self.building: list[type[BaseModel]] = []

    def model(self, model: type[BaseModel]) -> _Node:
        if model in self.building:
            return _Opaque("recursive structure", structured=True)
        self.building.append(model)
        children: dict[str, _Child] = {}
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            alias = info.serialization_alias or info.alias or name
            node = self.annotation(info.annotation, alias)
            children[alias] = _Child(node, not info.is_required() or _allows_none(info.annotation))
        for name, computed in model.model_computed_fields.items():
            alias = computed.alias or name
            children[alias] = _Child(self.annotation(computed.return_type, alias), True)
        self.building.pop()
        return _Object(children)

    def annotation(self, annotation: Any, name: str) -> _Node:
        origin = get_origin(annotation)
        if origin is Annotated:
            return self.annotation(get_args(annotation)[0], name)
        if origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) == 1:
                return self.annotation(options[0], name)
            return _Opaque("a union of several types")
        if origin is Literal:
            values = get_args(annotation)
            if all(isinstance(value, str) for value in values):
                return _Scalar("enum", tuple(values))
            return _Opaque("non-string literal values")
        if origin in _ARRAY_ORIGINS:
            args = get_args(annotation)
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                return _Opaque("a fixed-length tuple")
            return _Array(self.annotation(args[0], name) if args else _Opaque("untyped items"))
        if origin in (dict, Mapping):
            value = self.annotation(get_args(annotation)[1], name)
            if name in self.map_fields and isinstance(value, _Scalar):
                return _Map(value)
            return _Opaque("a map not declared as filterable", structured=True)
        if isinstance(annotation, type):
            return self._type(annotation)
        return _Opaque("an untyped value")

    def _type(self, annotation: type) -> _Node:
        if issubclass(annotation, BaseModel):
            return self.model(annotation)
        if issubclass(annotation, Enum):
            values = tuple(member.value for member in annotation)
            if all(isinstance(value, str) for value in values):
                return _Scalar("enum", values)
            return _Opaque("an enumeration of non-string values")
        for python_type, kind in _SCALAR_KINDS:
            if issubclass(annotation, python_type):
                return _Scalar(kind)
        if issubclass(annotation, _STRING_TYPES):
            return _Scalar("string")
        return _Opaque(f"of type {annotation.__name__}")


def _is_complex(node: _Node) -> bool:
    """A structure, array or map in SOL 013 terms (only those can be attribute-selected)."""
    return node.structured if isinstance(node, _Opaque) else not isinstance(node, _Scalar)


def _allows_none(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return _allows_none(get_args(annotation)[0])
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


class FilterSchema:
    """The filterable attributes of one resource type, derived from its pydantic model."""

    def __init__(
        self,
        root: _Object,
        body_column: ColumnElement[Any],
        columns: Mapping[str, ColumnElement[Any]],
        map_indexes: Mapping[tuple[str, ...], MapLookup] | None = None,
    ) -> None:
        self._root = root
        self.body_column = body_column
        self._columns = dict(columns)
        self.map_indexes: dict[tuple[str, ...], MapLookup] = dict(map_indexes or {})
        self._cache: dict[tuple[str, ...], FieldSpec] = {}
        self._selectable: frozenset[str] | None = None
        for path in self._columns:
            spec = self.resolve(tuple(path.split("/")))
            if spec.array_path is not None or spec.map_path is not None:
                raise ValueError(f"column attribute '{path}' must be a plain scalar attribute")
        for map_path in self.map_indexes:
            if not self._is_top_level_string_map(map_path):
                raise ValueError(f"'{'/'.join(map_path)}' is not a string map outside arrays")

    @classmethod
    def from_model(
        cls,
        model: type[BaseModel],
        body_column: ColumnElement[Any],
        columns: Mapping[str, ColumnElement[Any]] | None = None,
        map_fields: frozenset[str] | set[str] = frozenset({"metadata"}),
        map_indexes: Mapping[tuple[str, ...], MapLookup] | None = None,
    ) -> FilterSchema:
        """Walk ``model`` by JSON (alias) names; ``columns`` maps paths to dedicated columns,
        ``map_indexes`` the paths of string maps (outside arrays) to their index."""
        root = _TreeBuilder(frozenset(map_fields)).model(model)
        assert isinstance(root, _Object)
        return cls(root, body_column, columns or {}, map_indexes)

    def _is_top_level_string_map(self, path: tuple[str, ...]) -> bool:
        node: _Node = self._root
        for name in path:
            if not (isinstance(node, _Object) and name in node.children):
                return False
            node = node.children[name].node
        return isinstance(node, _Map) and isinstance(node.value, _Scalar) and node.value.kind == "string"

    def resolve(self, path: tuple[str, ...]) -> FieldSpec:
        """The spec of the scalar attribute at ``path``; FilterError if unknown or not scalar."""
        spec = self._cache.get(path)
        if spec is None:
            spec = self._resolve(path)
            if spec.map_path is None:  # map keys are free text: do not grow without bound
                self._cache[path] = spec
        return spec

    def _resolve(self, path: tuple[str, ...]) -> FieldSpec:
        shown = "/".join(path)
        node: _Node = self._root
        array_path: tuple[str, ...] | None = None
        map_path: tuple[str, ...] | None = None
        index = 0
        while True:
            if isinstance(node, _Array):
                if array_path is not None:
                    raise FilterError(f"attribute '{shown}' is not filterable (nested arrays)")
                array_path, node = path[:index], node.item
                continue
            if isinstance(node, _Opaque):
                raise FilterError(f"attribute '{shown}' is not filterable ({node.why})")
            if index == len(path):
                break
            if isinstance(node, _Object) and path[index] in node.children:
                node = node.children[path[index]].node
            elif isinstance(node, _Map):
                map_path, node = path[:index], node.value
            else:
                raise FilterError(f"unknown attribute '{shown}'")
            index += 1
        if not isinstance(node, _Scalar):
            raise FilterError(
                f"attribute '{shown}' is a structure; filter on one of its attributes"
            )
        column = self._columns.get(shown) if array_path is None and map_path is None else None
        return FieldSpec(node.kind, path, node.enum_values, column, array_path, map_path)

    def has_attribute(self, path: tuple[str, ...]) -> bool:
        """Whether ``path`` names any attribute (scalar or complex, arrays crossed element-wise)."""
        node: _Node = self._root
        for name in path:
            while isinstance(node, _Array):
                node = node.item
            if isinstance(node, _Object) and name in node.children:
                node = node.children[name].node
            elif isinstance(node, _Map):
                node = node.value
            else:
                return False
        return True

    def selectable_attributes(self) -> frozenset[str]:
        """Paths of the complex attributes with lower cardinality 0 (SOL 013 5.3 candidates)."""
        if self._selectable is not None:
            return self._selectable
        found: set[str] = set()

        def walk(node: _Node, prefix: str) -> None:
            while isinstance(node, _Array):
                node = node.item
            if not isinstance(node, _Object):
                return
            for name, child in node.children.items():
                path = f"{prefix}{name}"
                if child.optional and _is_complex(child.node):
                    found.add(path)
                walk(child.node, path + "/")

        walk(self._root, "")
        self._selectable = frozenset(found)
        return self._selectable


# --------------------------------------------------------------------------- dialect pieces


class json_array_items(FunctionElement[Any]):
    """Rows (column ``value``) of a JSON array; objects stay JSON. No rows for a non-array."""

    name = "json_array_items"
    inherit_cache = True


class json_array_texts(FunctionElement[Any]):
    """Rows (column ``value``) of a JSON array of scalars as SQL values (SQLite) or text (PG)."""

    name = "json_array_texts"
    inherit_cache = True


class json_object_entries(FunctionElement[Any]):
    """Rows (columns ``key``, ``value``) of a JSON object whose values are scalars."""

    name = "json_object_entries"
    inherit_cache = True


@compiles(json_array_items, "sqlite")
@compiles(json_array_texts, "sqlite")
@compiles(json_object_entries, "sqlite")
def _sqlite_json_each(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


def _pg_guarded(function: str, json_type: str, empty: str) -> Callable[..., str]:
    """PostgreSQL's set-returning JSON functions fail on other JSON types (``null``): guard."""

    def render(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
        value = compiler.process(element.clauses, **kw)
        return (
            f"{function}(CASE WHEN jsonb_typeof({value}) = '{json_type}' "
            f"THEN {value} ELSE '{empty}'::jsonb END)"
        )

    return render


compiles(json_array_items, "postgresql")(_pg_guarded("jsonb_array_elements", "array", "[]"))
compiles(json_array_texts, "postgresql")(_pg_guarded("jsonb_array_elements_text", "array", "[]"))
compiles(json_object_entries, "postgresql")(_pg_guarded("jsonb_each_text", "object", "{}"))


# --------------------------------------------------------------------------- value expressions


def _substr(text: ColumnElement[Any], start: Any, length: Any | None = None) -> ColumnElement[str]:
    args = (text, start) if length is None else (text, start, length)
    return sa.func.substr(*args, type_=sa.String)


def _to_int(text: ColumnElement[Any]) -> ColumnElement[int]:
    return sa.cast(text, sa.BigInteger)


def _datetime_key(text: ColumnElement[Any]) -> ColumnElement[int]:
    """Microseconds since the epoch of an ISO 8601 text; see ``document_datetime_key``."""
    year, month, day = (_to_int(_substr(text, start, n)) for start, n in ((1, 4), (6, 2), (9, 2)))
    # days from 1970-01-01 by the civil-calendar algorithm (all operands are non-negative)
    shifted_year = year - sa.case((month <= 2, 1), else_=0)
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    day_of_year = (153 * sa.case((month > 2, month - 3), else_=month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    seconds = (
        days * 86400 + _to_int(_substr(text, 12, 2)) * 3600
        + _to_int(_substr(text, 15, 2)) * 60 + _to_int(_substr(text, 18, 2))
    )
    rest = _substr(text, 20)
    size = sa.func.length(rest)
    sign = _substr(rest, size - 5, 1)
    has_offset = sa.and_(size >= 6, sign.in_(["+", "-"]))
    is_utc = _substr(rest, size, 1) == "Z"
    zone_length = sa.case((is_utc, 1), (has_offset, 6), else_=0)
    offset_minutes = sa.case(
        (has_offset, sa.case((sign == "-", -1), else_=1)
         * (_to_int(_substr(rest, size - 4, 2)) * 60 + _to_int(_substr(rest, size - 1, 2)))),
        else_=0,
    )
    digits = _substr(rest, 2, size - 1 - zone_length) + "000000"
    fraction = sa.case((_substr(rest, 1, 1) == ".", _to_int(_substr(digits, 1, 6))), else_=0)
    return seconds * 1_000_000 + fraction - offset_minutes * 60_000_000


def _typed_json(
    container: ColumnElement[Any], json_type: Any, path: tuple[str, ...], kind: str
) -> ColumnElement[Any]:
    """The scalar at ``path`` inside a JSON container, as an SQL value of ``kind``."""
    value = sa.type_coerce(container, json_type)[path]
    if kind == "number":
        return value.as_float()
    if kind == "boolean":
        return value.as_boolean()
    return _typed_text(value.as_string(), kind)


def _typed_text(raw: ColumnElement[Any], kind: str) -> ColumnElement[Any]:
    """A scalar coming from a set-returning JSON function (SQL value or text) typed by ``kind``."""
    if kind in ("string", "enum"):
        return sa.cast(raw, _TEXT)
    if kind == "integer":
        return _to_int(raw)
    if kind == "number":
        return sa.cast(raw, sa.Float)
    if kind == "boolean":
        return sa.cast(raw, sa.Boolean)
    return _datetime_key(sa.cast(raw, sa.String))


class _Compiler:
    """Builds the SQL of conditions and sort keys against one schema."""

    def __init__(self, schema: FilterSchema) -> None:
        self.schema = schema
        self.body = _expression(schema.body_column)
        self.json_type = self.body.type

    def condition(self, condition: Condition) -> ColumnElement[bool]:
        spec = self.schema.resolve(condition.path)
        values = typed_values(condition, spec)
        op = NEGATIONS.get(condition.op, condition.op)
        index = self._map_index(spec, op)
        if index is not None:
            return index.condition(spec.json_path[-1], values, negated=op != condition.op)
        positive = self._positive(spec, op, values)
        if op == condition.op:
            return positive
        return sa.not_(sa.func.coalesce(positive, sa.false()))

    def _map_index(self, spec: FieldSpec, op: str) -> MapLookup | None:
        """The index answering ``op`` (eq or in) on a key of a string map outside arrays, if any."""
        if spec.map_path is None or spec.array_path is not None or op not in _MAP_INDEX_OPERATORS:
            return None
        return self.schema.map_indexes.get(spec.map_path) if spec.kind == "string" else None

    def sort_key(self, path: tuple[str, ...], descending: bool) -> ColumnElement[Any]:
        spec = self.schema.resolve(path)
        if spec.array_path is not None:
            raise FilterError(f"cannot sort by '{'/'.join(path)}': it is inside an array")
        if spec.column is not None:
            value = _expression(spec.column)
            if spec.kind in ("string", "enum"):
                value = sa.cast(value, _TEXT)
        else:
            value = self._value_in(self.body, path, spec)
        ordered = value.desc() if descending else value.asc()
        return ordered.nulls_last()

    def _positive(self, spec: FieldSpec, op: str, values: list[Any]) -> ColumnElement[bool]:
        if spec.column is not None:
            return self._column_condition(spec, op, values)
        if spec.kind == "datetime":
            values = [datetime_key(moment) for moment in values]
        if spec.array_path is None:
            return _compare(self._value_in(self.body, spec.json_path, spec), op, values)
        rest = spec.json_path[len(spec.array_path) :]
        array = self.body[spec.array_path]
        if rest:
            items = json_array_items(array).table_valued("value")
            element = self._value_in(items.c.value, rest, spec, relative_to=spec.array_path)
        else:
            items = json_array_texts(array).table_valued("value")
            element = _typed_text(items.c.value, spec.kind)
        matching = sa.select(sa.literal(1)).select_from(items).where(_compare(element, op, values))
        return matching.exists()

    def _value_in(
        self, container: ColumnElement[Any], path: tuple[str, ...], spec: FieldSpec,
        relative_to: tuple[str, ...] = (),
    ) -> ColumnElement[Any]:
        """The typed value at ``path`` (relative to ``container``), following a map key if any."""
        if spec.map_path is None:
            return _typed_json(container, self.json_type, path, spec.kind)
        map_relative = spec.map_path[len(relative_to) :]
        if map_relative:
            container = sa.type_coerce(container, self.json_type)[map_relative]
        table = json_object_entries(container).table_valued("key", "value")
        raw = sa.select(table.c.value).where(table.c.key == spec.json_path[-1]).scalar_subquery()
        return _typed_text(raw, spec.kind)

    def _column_condition(self, spec: FieldSpec, op: str, values: list[Any]) -> ColumnElement[bool]:
        assert spec.column is not None
        column = _expression(spec.column)
        if spec.kind == "datetime" and not getattr(column.type, "timezone", False):
            values = [moment.replace(tzinfo=None) for moment in values]
        if spec.kind in ("string", "enum") and op in ORDERING_OPERATORS:
            column = sa.cast(column, _TEXT)
        return _compare(column, op, values)


def _expression(column: Any) -> ColumnElement[Any]:
    """The Core column behind an ORM attribute (``Row.body``) or the column itself."""
    clause = getattr(column, "__clause_element__", None)
    return clause() if clause is not None else column


def _compare(value: ColumnElement[Any], op: str, wanted: list[Any]) -> ColumnElement[bool]:
    if op == "in":
        return value.in_(wanted)
    if op == "cont":
        return sa.or_(*(_contains(value, part) for part in wanted))
    return COMPARISONS[op](value, wanted[0])  # type: ignore[no-any-return]


def _contains(value: ColumnElement[Any], part: str) -> ColumnElement[bool]:
    """Case-sensitive literal substring test without LIKE (SQLite's LIKE folds ASCII case)."""
    if part == "":
        return value.is_not(None)
    return sa.func.replace(value, part, "", type_=sa.String) != value


def compile_filter(
    expr: FilterExpr, schema: FilterSchema, dialect_name: str
) -> ColumnElement[bool]:
    """A WHERE clause selecting the rows whose document matches ``expr``.

    ``dialect_name`` is checked only: the SQL renders correctly for both supported dialects.
    """
    if dialect_name not in SUPPORTED_DIALECTS:
        raise ValueError(f"filters are not supported on the {dialect_name!r} dialect")
    compiler = _Compiler(schema)
    return sa.and_(sa.true(), *(compiler.condition(condition) for condition in expr.conditions))


def compile_sort(
    keys: list[tuple[tuple[str, ...], bool]], schema: FilterSchema
) -> list[ColumnElement[Any]]:
    """ORDER BY expressions for ``(path, descending)`` keys; missing values sort last.

    Only scalar attributes outside arrays can be sort keys (FilterError otherwise).
    """
    compiler = _Compiler(schema)
    return [compiler.sort_key(path, descending) for path, descending in keys]


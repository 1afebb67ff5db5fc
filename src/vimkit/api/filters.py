"""Attribute-based filtering (ETSI GS NFV-SOL 013 clause 5.2): syntax tree, parser, printer and
the reference evaluation in Python.

Grammar (SOL 013 5.2.2)::

    filterExpr  := simpleExpr [";" simpleExpr]*              -- conditions are AND-ed
    simpleExpr  := "(" op "," attrName ["/" attrName]* "," value ["," value]* ")"
    opOne       := eq | neq | gt | gte | lt | lte            -- exactly one value
    opMulti     := in | nin | cont | ncont                   -- one or more values

* A value that contains ``,`` ``)`` or ``'`` (or is empty) is enclosed in single quotes, and a
  ``'`` inside a quoted value is written ``''``.
* ``/`` descends into structures; in attribute names ``~`` ``/`` ``,`` ``@`` are written ``~0``
  ``~1`` ``~a`` ``~b`` (so any map key, e.g. a metadata key containing ``/``, can be named).
  The special name ``@key`` (filtering on map keys) is not supported and is refused.

Semantics, shared exactly by :func:`evaluate` and the SQL compiler in
``vimkit.store.filter_sql`` (the property tests hold them to it):

* Values are typed by the attribute's kind: integers, finite numbers, ``true``/``false``,
  ISO 8601 date-times (compared as instants to the microsecond; a date-time without offset is
  UTC) and enumerations (the value must be one of the allowed ones). Strings compare by Unicode
  code point and ``cont`` is a case-sensitive substring test.
* Operators apply to the data types of SOL 013's applicability table (clause 5.2.2):
  ``cont``/``ncont`` to strings only, ordering operators to strings, numbers and date-times
  (not to booleans or enumerations). Beyond the table, ``eq``/``neq``/``in``/``nin`` also
  accept date-times and ``in``/``nin`` booleans.
* **Arrays**: when the attribute path crosses an array (``nics/ipAddress``) or ends on an array
  of scalars, a positive operator (eq, in, gt, gte, lt, lte, cont) matches when *at least one*
  element matches, the reading of SOL 013 5.2.2 that e.g. OpenStack Tacker implements. Each
  condition picks its own element.
* **Negated operators** ``neq``, ``nin``, ``ncont`` are the exact complement of ``eq``, ``in``,
  ``cont``. SOL 013 table 5.2.2-1 defines ``nin`` as "Attribute not equal to any of the values
  in the list" and ``ncont`` as "String attribute does not contain any of the values in the
  list", so on an array ``(neq,a/b,x)`` matches when *no* element equals ``x`` (not when some
  element differs), and an absent (or ``null``) attribute or an empty array matches. This keeps
  ``filter=(eq,…)`` and ``filter=(neq,…)`` partitioning every collection.
* A missing or ``null`` attribute never satisfies a positive operator.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

ONE_VALUE_OPERATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte"})
MULTI_VALUE_OPERATORS = frozenset({"in", "nin", "cont", "ncont"})
OPERATORS = ONE_VALUE_OPERATORS | MULTI_VALUE_OPERATORS
#: negated operator -> the positive operator it complements
NEGATIONS = {"neq": "eq", "nin": "in", "ncont": "cont"}
ORDERING_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})
#: single-value comparisons, shared by ``evaluate`` and the SQL compiler (SQLAlchemy overloads them)
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}

MAX_FILTER_LENGTH = 4096
MAX_CONDITIONS = 32
MAX_VALUES = 100

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1)
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_FORBIDDEN_CHARS_RE = re.compile("[\x00\ud800-\udfff]")
_NAME_ESCAPES = {"0": "~", "1": "/", "a": ",", "b": "@"}


class FilterError(ValueError):
    """A filter (or sort key) that cannot be accepted; ``reason`` is the human text for a 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Condition:
    """One ``simpleFilterExpr``: ``op`` applied to the attribute at ``path`` (names unescaped)."""

    op: str
    path: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def attribute(self) -> str:
        """The attribute path as written in error messages."""
        return "/".join(self.path)


@dataclass(frozen=True)
class FilterExpr:
    """A whole ``filter`` parameter: all conditions must hold."""

    conditions: tuple[Condition, ...]


class ResolvedAttribute(Protocol):
    """What :func:`evaluate` needs to know about an attribute (``FieldSpec`` provides it)."""

    @property
    def kind(self) -> str: ...
    @property
    def enum_values(self) -> tuple[str, ...] | None: ...
    @property
    def json_path(self) -> tuple[str, ...]: ...
    @property
    def array_path(self) -> tuple[str, ...] | None: ...


class AttributeResolver(Protocol):
    """Maps an attribute path to its description, raising :class:`FilterError` if unknown."""

    def resolve(self, path: tuple[str, ...]) -> ResolvedAttribute: ...


# --------------------------------------------------------------------------- parsing / printing


def check_condition(condition: Condition) -> None:
    """Raise FilterError unless ``condition`` is well formed (operator, path, value count)."""
    if condition.op not in OPERATORS:
        raise FilterError(
            f"unknown operator '{condition.op}' (expected one of {', '.join(sorted(OPERATORS))})"
        )
    if not condition.path or any(not name for name in condition.path):
        raise FilterError(f"empty attribute name in '{condition.attribute}'")
    count = len(condition.values)
    if condition.op in ONE_VALUE_OPERATORS and count != 1:
        raise FilterError(f"operator '{condition.op}' needs exactly one value")
    if count == 0:
        raise FilterError(f"operator '{condition.op}' needs at least one value")
    if count > MAX_VALUES:
        raise FilterError(f"operator '{condition.op}' takes at most {MAX_VALUES} values")
    for text in (*condition.path, *condition.values):
        if _FORBIDDEN_CHARS_RE.search(text):
            raise FilterError("NUL and surrogate characters are not allowed in filters")


def parse_filter(text: str) -> FilterExpr:
    """Parse a SOL 013 ``filter`` parameter (already URL-decoded)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is longer than {MAX_FILTER_LENGTH} characters")
    if not text:
        raise FilterError("empty filter expression")
    if _FORBIDDEN_CHARS_RE.search(text):
        raise FilterError("NUL and surrogate characters are not allowed in filters")
    conditions = list(_Parser(text).conditions())
    if len(conditions) > MAX_CONDITIONS:
        raise FilterError(f"at most {MAX_CONDITIONS} filter expressions are allowed")
    return FilterExpr(tuple(conditions))


def format_filter(expr: FilterExpr) -> str:
    """Canonical text of ``expr``: names escaped, values quoted only when they must be."""
    for condition in expr.conditions:
        check_condition(condition)
    return ";".join(
        "({},{},{})".format(
            condition.op,
            "/".join(_escape_name(name) for name in condition.path),
            ",".join(_quote_value(value) for value in condition.values),
        )
        for condition in expr.conditions
    )


def _escape_name(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1").replace(",", "~a").replace("@", "~b")


def _quote_value(value: str) -> str:
    if value and not any(char in value for char in ",')"):
        return value
    return "'" + value.replace("'", "''") + "'"


class _Parser:
    """A single left-to-right scan; every error names what was expected and where."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def conditions(self) -> Iterator[Condition]:
        while True:
            yield self._condition()
            if self.pos == len(self.text):
                return
            if self.text[self.pos] != ";":
                raise FilterError(f"expected ';' between expressions at position {self.pos}")
            self.pos += 1

    def _condition(self) -> Condition:
        start = self.pos
        if not self.text.startswith("(", start):
            raise FilterError(f"expected '(' at position {start}")
        comma = self.text.find(",", start + 1)
        close = self.text.find(")", start + 1)
        if comma < 0 or 0 <= close < comma:
            raise FilterError(f"expected '(operator,attribute,value)' at position {start}")
        op = self.text[start + 1 : comma]
        if op not in OPERATORS:
            raise FilterError(
                f"unknown operator '{op}' (expected one of {', '.join(sorted(OPERATORS))})"
            )
        name_end = self.text.find(",", comma + 1)
        if name_end < 0:
            raw = self.text[comma + 1 :].split(")", 1)[0]
            raise FilterError(f"operator '{op}' needs a value for attribute '{raw}'")
        path = _parse_path(self.text[comma + 1 : name_end])
        self.pos = name_end
        values: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] == ",":
            self.pos += 1
            values.append(self._value())
            if len(values) > MAX_VALUES:
                raise FilterError(f"operator '{op}' takes at most {MAX_VALUES} values")
        if self.pos >= len(self.text):
            raise FilterError(f"missing ')' to close the expression at position {start}")
        self.pos += 1  # the ')' that _value stopped at
        condition = Condition(op, path, tuple(values))
        check_condition(condition)
        return condition

    def _value(self) -> str:
        text, start = self.text, self.pos
        if text.startswith("'", start):
            chunks: list[str] = []
            pos = start + 1
            while True:
                quote = text.find("'", pos)
                if quote < 0:
                    raise FilterError(f"unbalanced quote in value at position {start}")
                chunks.append(text[pos:quote])
                if text.startswith("'", quote + 1):
                    chunks.append("'")
                    pos = quote + 2
                    continue
                self.pos = quote + 1
                if self.pos < len(text) and text[self.pos] not in ",)":
                    raise FilterError(
                        f"expected ',' or ')' after quoted value at position {self.pos}"
                    )
                return "".join(chunks)
        end = start
        while end < len(text) and text[end] not in ",)":
            end += 1
        value = text[start:end]
        if "'" in value:
            raise FilterError(
                f"unbalanced quote in value at position {start} (a value containing ' , or ) "
                "must be enclosed in '…' with ' written as '')"
            )
        if not value:
            raise FilterError(f"missing value at position {start} (write '' for an empty string)")
        self.pos = end
        return value


def _parse_path(raw: str) -> tuple[str, ...]:
    names = []
    for part in raw.split("/"):
        if not part:
            raise FilterError(f"empty attribute name in '{raw}'")
        if part == "@key":
            raise FilterError("'@key' (filtering on map keys) is not supported")
        names.append(re.sub(r"~(.?)", _unescape, part))
    return tuple(names)


def _unescape(match: re.Match[str]) -> str:
    try:
        return _NAME_ESCAPES[match.group(1)]
    except KeyError:
        raise FilterError(
            f"invalid escape '{match.group(0)}' in attribute name (use ~0 ~1 ~a ~b)"
        ) from None


# --------------------------------------------------------------------------- typing of values


def check_operator(op: str, kind: str, attribute: str) -> None:
    """Refuse operator/kind combinations SOL 013 table 5.2.2-2 does not define."""
    if op in ("cont", "ncont") and kind != "string":
        raise FilterError(
            f"operator '{op}' applies to strings only, not to {kind} attribute '{attribute}'"
        )
    if op in ORDERING_OPERATORS and kind in ("boolean", "enum"):
        raise FilterError(f"operator '{op}' does not apply to {kind} attribute '{attribute}'")


def coerce_value(
    raw: str, kind: str, enum_values: Sequence[str] | None, attribute: str
) -> str | int | float | bool | datetime:
    """Turn a filter value into the Python value of the attribute's kind (datetimes: aware UTC)."""
    if kind in ("string",):
        return raw
    if kind == "enum":
        allowed = tuple(enum_values or ())
        if raw not in allowed:
            raise FilterError(
                f"'{raw}' is not an allowed value for attribute '{attribute}' "
                f"(allowed: {', '.join(allowed)})"
            )
        return raw
    if kind == "integer":
        if not _INTEGER_RE.fullmatch(raw):
            raise FilterError(f"'{raw}' is not an integer for attribute '{attribute}'")
        number = int(raw)
        if not INT64_MIN <= number <= INT64_MAX:
            raise FilterError(f"'{raw}' is out of range for attribute '{attribute}'")
        return number
    if kind == "number":
        if not _NUMBER_RE.fullmatch(raw) or not math.isfinite(float(raw)):
            raise FilterError(f"'{raw}' is not a finite number for attribute '{attribute}'")
        return float(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise FilterError(
                f"'{raw}' is not a boolean (true or false) for attribute '{attribute}'"
            )
        return raw == "true"
    if kind == "datetime":
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise FilterError(
                f"'{raw}' is not an ISO 8601 date-time for attribute '{attribute}'"
            ) from None
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError:
            raise FilterError(f"'{raw}' is out of range for attribute '{attribute}'") from None
    raise FilterError(f"attribute '{attribute}' is not filterable")


def datetime_key(moment: datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z, the comparison key of date-times everywhere."""
    naive = moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
    return (naive - _EPOCH) // timedelta(microseconds=1)


def document_datetime_key(text: str) -> int | None:
    """Comparison key of a date-time stored in a document, or None if it is not one.

    Mirrors, step by step, the SQL expression of ``filter_sql._datetime_key`` (which must work
    on SQLite and PostgreSQL alike with plain string functions): ``YYYY-MM-DDTHH:MM:SS``, an
    optional fraction (truncated to microseconds) and ``Z``, ``±HH:MM`` or nothing (UTC), the
    ISO 8601 forms that pydantic writes.
    """
    try:
        base = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
        rest = text[19:]
        size = len(rest)
        is_utc = rest.endswith("Z")
        has_offset = size >= 6 and rest[size - 6] in "+-"
        zone_length = 1 if is_utc else 6 if has_offset else 0
        offset_minutes = 0
        if has_offset:
            sign = -1 if rest[size - 6] == "-" else 1
            offset_minutes = sign * (int(rest[size - 5 : size - 3]) * 60 + int(rest[size - 2 :]))
        fraction = int((rest[1 : size - zone_length] + "000000")[:6]) if rest[:1] == "." else 0
    except ValueError:
        return None
    return datetime_key(base) + fraction - offset_minutes * 60_000_000


# --------------------------------------------------------------------------- evaluation


def evaluate(expr: FilterExpr, doc: Mapping[str, Any], schema: AttributeResolver) -> bool:
    """True when ``doc`` (a JSON-like document of the schema's model) matches every condition."""
    return all(
        _matches(condition, doc, schema.resolve(condition.path)) for condition in expr.conditions
    )


def typed_values(condition: Condition, spec: ResolvedAttribute) -> list[Any]:
    """The condition's values coerced for ``spec`` after checking the operator applies."""
    check_condition(condition)
    check_operator(condition.op, spec.kind, condition.attribute)
    return [
        coerce_value(value, spec.kind, spec.enum_values, condition.attribute)
        for value in condition.values
    ]


def _matches(condition: Condition, doc: Mapping[str, Any], spec: ResolvedAttribute) -> bool:
    wanted = typed_values(condition, spec)
    if spec.kind == "datetime":
        wanted = [datetime_key(moment) for moment in wanted]
    op = NEGATIONS.get(condition.op, condition.op)
    found = any(
        value is not None and _compare(op, value, wanted)
        for value in (_normalise(raw, spec.kind) for raw in _document_values(doc, spec))
    )
    return found if op == condition.op else not found


def _document_values(doc: Mapping[str, Any], spec: ResolvedAttribute) -> Iterator[Any]:
    if spec.array_path is None:
        yield _lookup(doc, spec.json_path)
        return
    elements = _lookup(doc, spec.array_path)
    if isinstance(elements, list):
        rest = spec.json_path[len(spec.array_path) :]
        for element in elements:
            yield _lookup(element, rest)


def _lookup(value: Any, path: Sequence[str]) -> Any:
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _normalise(value: Any, kind: str) -> Any:
    """The document value as the kind's Python type, None when absent or of another type."""
    if kind in ("string", "enum"):
        return value if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind == "integer":
        return value if isinstance(value, int) else None
    if kind == "number":
        return float(value) if isinstance(value, (int, float)) else None
    if kind == "datetime":
        return document_datetime_key(value) if isinstance(value, str) else None
    return None


def _compare(op: str, value: Any, wanted: list[Any]) -> bool:
    if op == "in":
        return value in wanted
    if op == "cont":
        return any(part in value for part in wanted)
    return bool(COMPARISONS[op](value, wanted[0]))

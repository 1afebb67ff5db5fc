"""The SQL compiler agrees with the reference ``evaluate`` on SQLite and (when configured)
PostgreSQL, on a fixed random dataset and random filters; plus schema, sort and error cases.
The documents' ``metadata`` has a map index (as computes' has), so eq/neq/in/nin on its keys are
answered by the side table, and every other operator by the documents."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from vimkit.api.filters import (
    MULTI_VALUE_OPERATORS,
    OPERATORS,
    ORDERING_OPERATORS,
    Condition,
    FilterError,
    FilterExpr,
    document_datetime_key,
    evaluate,
    format_filter,
    parse_filter,
)
from vimkit.store.filter_sql import FieldSpec, FilterSchema, compile_filter, compile_sort
from vimkit.store.map_index import MapIndex

PG_URL = os.environ.get("VIMKIT_TEST_PG_URL")
UTC = timezone.utc


class Colour(str, Enum):
    RED = "RED"
    GREEN = "GREEN"
    BLUE = "BLUE"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Port(_Camel):
    port_name: str | None = None
    speed: int | None = None
    weight: float | None = None
    enabled: bool | None = None
    colour: Colour | None = None
    seen_at: datetime | None = None
    metadata: dict[str, str] | None = None


class Inner(_Camel):
    label: str | None = None
    level: int | None = None
    mode: Literal["fast", "slow"] | None = None
    when: datetime | None = None


class Doc(_Camel):
    doc_id: str
    name: str | None = None
    count: int | None = None
    ratio: float | None = None
    flag: bool | None = None
    colour: Colour | None = None
    created_at: datetime | None = None
    inner: Inner | None = None
    ports: list[Port] = Field(default_factory=list)
    tags: list[str] | None = None
    scores: list[int] | None = None
    metadata: dict[str, str] | None = None
    links: dict[str, Any] | None = Field(None, alias="_links")


# --------------------------------------------------------------------------- dataset

STRINGS = [
    "alpha", "Alpha", "ALPHA", "alphabet", "be%ta", "ga_mma", "x' OR 1=1 --", "naïve", "日本語",
    "", "a,b", "a)b", "(x)", " spaced ", "🎉 party", "Z", "a\\b", 'q"uote', "%", "_", "1=1;--",
]
META_KEYS = ["cluster", "zone", "we/ird", "a,b", 'q"k', "@at", "~t", "x'); DROP TABLE t; --", ""]
COLOURS = [colour.value for colour in Colour]


def _random_datetime(rng: random.Random) -> datetime:
    if rng.random() < 0.05:
        return rng.choice([datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)])
    # a few days only, so that neighbours are minutes apart and time zones change the order
    base = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(-86400 * 3, 86400 * 3))
    base += timedelta(microseconds=rng.choice([0, 0, 1, 500000, rng.randint(0, 999999)]))
    zones = [UTC, None, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
    zone = rng.choice(zones)
    return base.replace(tzinfo=None) if zone is None else base.astimezone(zone)


def _random_doc(rng: random.Random, index: int) -> Doc:
    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.8 else None

    def metadata() -> dict[str, str] | None:
        return maybe({key: rng.choice(STRINGS) for key in rng.sample(META_KEYS, rng.randint(0, 3))})

    ports = [
        Port(
            port_name=maybe(rng.choice(STRINGS)), speed=maybe(rng.randint(-3, 3) * 10),
            weight=maybe(rng.choice([0.1, 0.2, 0.30000000000000004, -0.0, 1e-7, 1e16, 2.5])),
            enabled=maybe(rng.random() < 0.5), colour=maybe(rng.choice(list(Colour))),
            seen_at=maybe(_random_datetime(rng)), metadata=metadata(),
        )
        for _ in range(rng.choice([0, 0, 1, 2, 3]))
    ]
    return Doc(
        doc_id=f"d{index:03d}", name=maybe(rng.choice(STRINGS)),
        count=maybe(rng.choice([0, 1, -1, 7, 2**40, -(2**62), rng.randint(-100, 100)])),
        ratio=maybe(rng.choice([0.0, -0.0, 0.5, 1.25, 0.1 + 0.2, 1e300, rng.uniform(-10, 10)])),
        flag=maybe(rng.random() < 0.5), colour=maybe(rng.choice(list(Colour))),
        created_at=maybe(_random_datetime(rng)),
        inner=maybe(Inner(
            label=maybe(rng.choice(STRINGS)), level=maybe(rng.randint(-5, 5)),
            mode=maybe(rng.choice(["fast", "slow"])), when=maybe(_random_datetime(rng)),
        )),
        ports=ports,
        tags=maybe(rng.sample(STRINGS, rng.randint(0, 3))),
        scores=maybe([rng.randint(-5, 5) for _ in range(rng.randint(0, 3))]),
        metadata=metadata(), links={"self": {"href": f"/docs/d{index:03d}"}},
    )


def _dataset() -> list[dict[str, Any]]:
    rng = random.Random(20240601)
    docs = [_random_doc(rng, index) for index in range(90)]
    return [
        doc.model_dump(mode="json", by_alias=True, exclude_none=index % 2 == 0)
        for index, doc in enumerate(docs)
    ]


DOCS = _dataset()
BY_ID = {doc["docId"]: doc for doc in DOCS}


# --------------------------------------------------------------------------- databases


@dataclass
class Backend:
    dialect: str
    connection: sa.Connection
    table: sa.Table
    schema: FilterSchema

    def ids(self, where: sa.ColumnElement[bool]) -> set[str]:
        return set(self.connection.execute(sa.select(self.table.c.id).where(where)).scalars())


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "filter_docs", metadata,
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("seq", sa.Integer, unique=True, nullable=False),
        sa.Column("count_col", sa.BigInteger),
        sa.Column("created_col", sa.DateTime(timezone=True)),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )


def _metadata_table(metadata: sa.MetaData) -> sa.Table:
    """The map index of the documents' ``metadata`` (as ``compute_metadata``)."""
    schema = f"{metadata.schema}." if metadata.schema else ""
    return sa.Table(
        "filter_doc_metadata", metadata,
        sa.Column("doc_seq", sa.Integer, sa.ForeignKey(f"{schema}filter_docs.seq", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.Column("value_digest", sa.String(16), nullable=False),
        sa.Index("ix_filter_doc_metadata_lookup", "key", "value_digest", "doc_seq"),
    )


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored row: ``docId``, ``count`` and ``createdAt`` also live in dedicated columns.

    Date-times go into the column in UTC: SQLite's DateTime drops the offset.
    """
    created = datetime.fromisoformat(doc["createdAt"]) if doc.get("createdAt") else None
    if created is not None:
        created = created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)
    return {"id": doc["docId"], "seq": int(doc["docId"][1:]), "count_col": doc.get("count"),
            "created_col": created, "body": doc}


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One database per backend for the whole module, loaded once with DOCS."""
    metadata = sa.MetaData()
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=StaticPool)
        namespace = None
    else:
        if not PG_URL:
            pytest.skip("PostgreSQL not configured (set VIMKIT_TEST_PG_URL)")
        engine = sa.create_engine(PG_URL)
        namespace = f"vk_filter_{uuid.uuid4().hex[:12]}"
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{namespace}"'))
        metadata = sa.MetaData(schema=namespace)
    table = _table(metadata)
    side = _metadata_table(metadata)
    metadata.create_all(engine)
    rows = [_row(doc) for doc in DOCS]
    index = MapIndex(side, "doc_seq", table.c.seq, table.c.id)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
        conn.execute(side.insert(), index.rows((row["seq"], row["body"].get("metadata")) for row in rows))
    schema = FilterSchema.from_model(
        Doc, table.c.body, columns={"docId": table.c.id, "count": table.c.count_col,
                                    "createdAt": table.c.created_col},
        map_indexes={("metadata",): index},
    )
    try:
        with engine.connect() as connection:
            yield Backend(request.param, connection, table, schema)
    finally:
        if namespace is not None:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{namespace}" CASCADE'))
        engine.dispose()


STORED = BY_ID
JSON_SCHEMA = FilterSchema.from_model(Doc, sa.column("body", sa.JSON()))


# --------------------------------------------------------------------------- random filters

FIELDS: list[tuple[tuple[str, ...], str]] = [
    (("docId",), "string"), (("name",), "string"), (("count",), "integer"), (("ratio",), "number"),
    (("flag",), "boolean"), (("colour",), "enum"), (("createdAt",), "datetime"),
    (("inner", "label"), "string"), (("inner", "level"), "integer"), (("inner", "mode"), "enum"),
    (("inner", "when"), "datetime"), (("ports", "portName"), "string"),
    (("ports", "speed"), "integer"), (("ports", "weight"), "number"),
    (("ports", "enabled"), "boolean"), (("ports", "colour"), "enum"),
    (("ports", "seenAt"), "datetime"), (("tags",), "string"), (("scores",), "integer"),
    *((("metadata", key), "string") for key in META_KEYS if key),
    *((("ports", "metadata", key), "string") for key in META_KEYS[:4]),
]


def _operators(kind: str) -> list[str]:
    ops = set(OPERATORS)
    if kind != "string":
        ops -= {"cont", "ncont"}
    if kind in ("boolean", "enum"):
        ops -= ORDERING_OPERATORS
    return sorted(ops)


def _datetime_texts() -> st.SearchStrategy[str]:
    """ISO texts near the stored date-times (±1 µs) or anywhere, in several spellings."""
    def render(moment: datetime, style: int) -> str:
        if style == 0:
            return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if style == 1:
            return moment.astimezone(timezone(timedelta(hours=-3, minutes=-30))).isoformat()
        if style == 2:
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat()
        return moment.astimezone(UTC).date().isoformat()

    parsed = {datetime.fromisoformat(text) for doc in DOCS for text in _datetimes_in(doc)}
    aware = {moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in parsed}
    nearby = st.sampled_from(sorted(moment for moment in aware if 3 < moment.year < 9997))
    moments = st.one_of(
        nearby,
        nearby.flatmap(lambda moment: st.sampled_from([-1, 0, 1]).map(
            lambda shift: moment + timedelta(microseconds=shift))),
        st.datetimes(datetime(2, 1, 1), datetime(9998, 1, 1), timezones=st.just(UTC)),
    )
    low, high = datetime(2, 1, 1, tzinfo=UTC), datetime(9998, 1, 1, tzinfo=UTC)
    moments = moments.filter(lambda moment: low < moment < high)
    return st.builds(render, moments, st.integers(0, 3))


def _datetimes_in(doc: dict[str, Any]) -> list[str]:
    found = [doc.get("createdAt"), (doc.get("inner") or {}).get("when")]
    found += [port.get("seenAt") for port in doc.get("ports", [])]
    return [text for text in found if text]


DATETIME_TEXTS = _datetime_texts()


def _values(kind: str, path: tuple[str, ...]) -> st.SearchStrategy[str]:
    if kind == "string":
        pieces = st.sampled_from(STRINGS + ["lph", "a", "%", "_", "'", "d00", "d01"])
        ids = st.sampled_from(sorted(BY_ID))
        return st.one_of(pieces, ids, st.text(max_size=4).filter(lambda s: "\x00" not in s))
    if kind == "integer":
        special = st.sampled_from([2**40, -(2**62), 0, 10, -10])
        return st.one_of(st.integers(-120, 120), special).map(str)
    if kind == "number":
        floats = st.sampled_from([0.1, 0.2, 0.1 + 0.2, 0.3, -0.0, 1e-7, 1e16, 2.5, 1e300, 1.25])
        return st.one_of(floats, st.floats(-20, 20)).map(repr)
    if kind == "boolean":
        return st.sampled_from(["true", "false"])
    if kind == "enum":
        return st.sampled_from(["fast", "slow"] if path == ("inner", "mode") else COLOURS)
    return DATETIME_TEXTS


# date-times have the most intricate SQL, so they are drawn more often
WEIGHTED_FIELDS = FIELDS + [(path, kind) for path, kind in FIELDS if kind == "datetime"] * 3


@st.composite
def _condition(draw: st.DrawFn) -> Condition:
    path, kind = draw(st.sampled_from(WEIGHTED_FIELDS))
    op = draw(st.sampled_from(_operators(kind)))
    count = draw(st.integers(1, 3)) if op in MULTI_VALUE_OPERATORS else 1
    return Condition(op, path, tuple(draw(_values(kind, path)) for _ in range(count)))


FILTERS = st.lists(_condition(), min_size=1, max_size=3).map(lambda items: FilterExpr(tuple(items)))


@given(expr=FILTERS)
@settings(max_examples=200, deadline=None)
def test_sql_selects_exactly_what_evaluate_accepts(backend: Backend, expr: FilterExpr) -> None:
    parsed = parse_filter(format_filter(expr))
    assert parsed == expr
    expected = {doc_id for doc_id, doc in STORED.items() if evaluate(parsed, doc, backend.schema)}
    assert backend.ids(compile_filter(parsed, backend.schema, backend.dialect)) == expected


def test_dataset_exercises_the_interesting_cases(backend: Backend) -> None:
    """Guards the property test against a degenerate dataset."""
    for text in ("(eq,ports/speed,10)", "(neq,ports/speed,10)", "(cont,name,%)", "(eq,tags,alpha)",
                 "(cont,metadata/we~1ird,a)", "(gt,createdAt,2024-01-01)", "(eq,flag,true)",
                 "(lt,ratio,0.3)", "(cont,metadata/q\"k,a)", "(cont,ports/metadata/cluster,a)",
                 "(gt,ports/seenAt,2024-01-01)", "(in,inner/mode,fast)", "(gte,scores,3)"):
        expr = parse_filter(text)
        got = backend.ids(compile_filter(expr, backend.schema, backend.dialect))
        assert got == {i for i, doc in STORED.items() if evaluate(expr, doc, backend.schema)}
        assert 0 < len(got) < len(STORED), text


# --------------------------------------------------------------------------- sorting


def _python_order(keys: list[tuple[tuple[str, ...], bool]]) -> list[str]:
    ids = sorted(STORED)
    for path, descending in reversed(keys):
        kind = JSON_SCHEMA.resolve(path).kind

        def value(doc_id: str, path: tuple[str, ...] = path, kind: str = kind) -> Any:
            node: Any = STORED[doc_id]
            for name in path:
                node = node.get(name) if isinstance(node, dict) else None
            if node is not None and kind == "datetime":
                return document_datetime_key(node)
            return node

        present = sorted((i for i in ids if value(i) is not None), key=value, reverse=descending)
        ids = present + [i for i in ids if value(i) is None]
    return ids


@pytest.mark.parametrize(
    "keys",
    [
        [(("name",), False)], [(("name",), True)], [(("count",), True)], [(("ratio",), False)],
        [(("createdAt",), False)], [(("inner", "when"), True)],
        [(("flag",), False), (("colour",), True)], [(("metadata", "cluster"), False)],
        [(("metadata", "we/ird"), True)], [(("inner", "level"), False)],
    ],
)
def test_sort_matches_python_order(
    backend: Backend, keys: list[tuple[tuple[str, ...], bool]]
) -> None:
    order = compile_sort([*keys, (("docId",), False)], backend.schema)
    got = list(backend.connection.execute(sa.select(backend.table.c.id).order_by(*order)).scalars())
    assert got == _python_order([*keys, (("docId",), False)])


def test_sort_refuses_arrays_structures_and_unknown(backend: Backend) -> None:
    for path, reason in ((("ports", "speed"), "inside an array"), (("tags",), "inside an array"),
                         (("inner",), "is a structure"), (("nope",), "unknown attribute 'nope'")):
        with pytest.raises(FilterError, match=reason):
            compile_sort([(path, False)], backend.schema)


# --------------------------------------------------------------------------- injection, errors


@pytest.mark.parametrize(
    "text",
    [
        "(eq,name,'x'' OR 1=1 --')",
        "(in,name,'x'' OR 1=1 --','1=1;--')",
        "(cont,name,' OR ')",
        "(eq,metadata/x'); DROP TABLE t; --,alpha)",
        "(neq,metadata/q\"k,'''')",
        "(eq,name,%)",
        "(cont,name,_)",
    ],
)
def test_injection_attempts_are_plain_values(backend: Backend, text: str) -> None:
    expr = parse_filter(text)
    where = compile_filter(expr, backend.schema, backend.dialect)
    expected = {i for i, doc in STORED.items() if evaluate(expr, doc, backend.schema)}
    assert backend.ids(where) == expected
    count = sa.select(sa.func.count()).select_from(backend.table)
    assert backend.connection.execute(count).scalar_one() == len(DOCS)
    dialect = sqlite.dialect() if backend.dialect == "sqlite" else postgresql.dialect()
    sql = str(sa.select(backend.table.c.id).where(where).compile(dialect=dialect))
    for part in ("OR 1=1", "DROP TABLE", "q\"k", "1=1;"):
        assert part not in sql


def test_injection_value_matches_only_the_literal_document(backend: Backend) -> None:
    expr = parse_filter("(eq,name,'x'' OR 1=1 --')")
    hits = backend.ids(compile_filter(expr, backend.schema, backend.dialect))
    assert hits and all(STORED[i].get("name") == "x' OR 1=1 --" for i in hits)
    with pytest.raises(FilterError, match="unbalanced quote"):
        parse_filter("(eq,name,x' OR 1=1 --)")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(eq,foo/bar,1)", "unknown attribute 'foo/bar'"),
        ("(eq,ports,1)", "is a structure"),
        ("(eq,_links/self,1)", "not filterable"),
        ("(eq,count,abc)", "'abc' is not an integer for attribute 'count'"),
        ("(eq,colour,PINK)", "'PINK' is not an allowed value for attribute 'colour'"),
        ("(gt,ports/seenAt,2024-13-01)", "not an ISO 8601 date-time for attribute 'ports/seenAt'"),
        ("(cont,scores,1)", "applies to strings only"),
    ],
)
def test_compile_errors(backend: Backend, text: str, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(parse_filter(text), backend.schema, backend.dialect)
    assert reason in info.value.reason


def test_unsupported_dialect() -> None:
    with pytest.raises(ValueError, match="mysql"):
        compile_filter(parse_filter("(eq,name,x)"), JSON_SCHEMA, "mysql")


# --------------------------------------------------------------------------- schema


def test_schema_resolves_aliases_columns_arrays_and_maps() -> None:
    table = _table(sa.MetaData())
    schema = FilterSchema.from_model(Doc, table.c.body, columns={"docId": table.c.id})
    assert schema.resolve(("docId",)) == FieldSpec("string", ("docId",), column=table.c.id)
    assert schema.resolve(("docId",)).column is table.c.id
    assert schema.resolve(("inner", "mode")).enum_values == ("fast", "slow")
    assert schema.resolve(("colour",)).enum_values == ("RED", "GREEN", "BLUE")
    assert schema.resolve(("ports", "seenAt")) == FieldSpec(
        "datetime", ("ports", "seenAt"), array_path=("ports",)
    )
    assert schema.resolve(("scores",)) == FieldSpec("integer", ("scores",), array_path=("scores",))
    assert schema.resolve(("ports", "metadata", "k/x")) == FieldSpec(
        "string", ("ports", "metadata", "k/x"),
        array_path=("ports",), map_path=("ports", "metadata"),
    )
    with pytest.raises(FilterError, match="unknown attribute 'doc_id'"):
        schema.resolve(("doc_id",))  # python names are not JSON names
    with pytest.raises(ValueError, match="plain scalar"):
        FilterSchema.from_model(Doc, table.c.body, columns={"tags": table.c.id})


def test_schema_type_coverage() -> None:
    class Deep(BaseModel):
        grid: list[list[int]] = []
        pair: tuple[int, str] | None = None
        either: int | str | None = None
        tags: frozenset[str] = frozenset()
        labels: dict[str, str] = {}
        self_ref: "Deep | None" = None

    Deep.model_rebuild()
    schema = FilterSchema.from_model(Deep, sa.column("body", sa.JSON()), map_fields={"labels"})
    assert schema.resolve(("tags",)).array_path == ("tags",)
    assert schema.resolve(("labels", "any")).map_path == ("labels",)
    for path, reason in ((("grid",), "nested arrays"), (("pair",), "fixed-length tuple"),
                         (("either",), "union"), (("selfRef", "tags"), "unknown attribute"),
                         (("self_ref", "tags"), "recursive")):
        with pytest.raises(FilterError, match=reason):
            schema.resolve(path)


def test_selectable_attributes_are_optional_complex_ones() -> None:
    assert JSON_SCHEMA.selectable_attributes() == frozenset(
        {"inner", "ports", "ports/metadata", "tags", "scores", "metadata", "_links"}
    )
    assert JSON_SCHEMA.has_attribute(("ports", "metadata", "anything"))
    assert not JSON_SCHEMA.has_attribute(("ports", "nope"))


@pytest.mark.parametrize(
    ("text", "indexed"),
    [("(eq,metadata/cluster,alpha)", True), ("(neq,metadata/cluster,alpha)", True),
     ("(in,metadata/we~1ird,alpha,'',%)", True), ("(nin,metadata/zone,_)", True),
     ("(cont,metadata/cluster,a)", False), ("(gt,metadata/cluster,a)", False),
     ("(eq,ports/metadata/cluster,alpha)", False)],
)
def test_map_index_answers_eq_neq_in_nin_only(backend: Backend, text: str, indexed: bool) -> None:
    expr = parse_filter(text)
    where = compile_filter(expr, backend.schema, backend.dialect)
    dialect = sqlite.dialect() if backend.dialect == "sqlite" else postgresql.dialect()
    sql = str(sa.select(backend.table.c.id).where(where).compile(dialect=dialect))
    assert ("filter_doc_metadata" in sql) is indexed
    assert ("json_each" in sql or "jsonb_each_text" in sql or "jsonb_array_elements" in sql) is not indexed
    assert backend.ids(where) == {i for i, doc in STORED.items() if evaluate(expr, doc, backend.schema)}


def test_map_index_must_be_a_string_map_outside_arrays() -> None:
    index = object()
    for path in (("ports", "metadata"), ("name",), ("links",), ("nope",)):
        with pytest.raises(ValueError, match="not a string map"):
            FilterSchema.from_model(Doc, sa.column("body", sa.JSON()), map_indexes={path: index})  # type: ignore[dict-item]

"""SOL 013 filter syntax (parse/format), value typing and the reference evaluation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Literal

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from vimkit.api.filters import (
    MAX_CONDITIONS,
    MAX_FILTER_LENGTH,
    MAX_VALUES,
    MULTI_VALUE_OPERATORS,
    ONE_VALUE_OPERATORS,
    Condition,
    FilterError,
    FilterExpr,
    datetime_key,
    document_datetime_key,
    evaluate,
    format_filter,
    parse_filter,
)
from vimkit.store.filter_sql import FilterSchema


class Colour(str, Enum):
    RED = "RED"
    GREEN = "GREEN"


class Nic(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    ip_address: str | None = None
    speed: int | None = None


class Item(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    item_id: str
    name: str | None = None
    count: int | None = None
    ratio: float | None = None
    enabled: bool | None = None
    colour: Colour | None = None
    mode: Literal["fast", "slow"] | None = None
    created_at: datetime | None = None
    nics: list[Nic] = Field(default_factory=list)
    tags: list[str] | None = None
    metadata: dict[str, str] | None = None


SCHEMA = FilterSchema.from_model(Item, sa.column("body", sa.JSON()))


def _doc(**fields: object) -> dict[str, object]:
    return Item.model_validate({"itemId": "x", **fields}).model_dump(mode="json", by_alias=True)


def _matches(text: str, doc: dict[str, object]) -> bool:
    return evaluate(parse_filter(text), doc, SCHEMA)


# --------------------------------------------------------------------------- parsing


def test_parse_examples_from_the_binding() -> None:
    expr = parse_filter("(eq,computeName,node-1);(in,zoneId,z1,z2)")
    assert expr == FilterExpr(
        (Condition("eq", ("computeName",), ("node-1",)), Condition("in", ("zoneId",), ("z1", "z2")))
    )
    assert parse_filter("(gte,virtualCpu/numVirtualCpu,2)").conditions[0].path == (
        "virtualCpu",
        "numVirtualCpu",
    )


def test_quoting_and_escapes() -> None:
    expr = parse_filter("(in,a~1b~ac~bd~0e/x,'it''s','a,b','(x)',plain text,'')")
    (condition,) = expr.conditions
    assert condition.path == ("a/b,c@d~e", "x")
    assert condition.values == ("it's", "a,b", "(x)", "plain text", "")
    assert format_filter(expr) == "(in,a~1b~ac~bd~0e/x,'it''s','a,b','(x)',plain text,'')"


def test_format_quotes_only_when_needed() -> None:
    expr = FilterExpr((Condition("cont", ("name",), ("a;b(c", "x)y", "", "o'k")),))
    assert format_filter(expr) == "(cont,name,a;b(c,'x)y','','o''k')"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(like,name,x)", "unknown operator 'like'"),
        ("(EQ,name,x)", "unknown operator 'EQ'"),
        ("(eq,name,'abc)", "unbalanced quote"),
        ("(eq,name,ab'c)", "unbalanced quote"),
        ("(eq,name,'a'b)", "expected ',' or ')' after quoted value"),
        ("(eq,name)", "operator 'eq' needs a value for attribute 'name'"),
        ("(eq,name,)", "missing value"),
        ("(in,name,a,,b)", "missing value"),
        ("(eq,name,a,b)", "operator 'eq' needs exactly one value"),
        ("(eq,name,a", "missing ')'"),
        ("eq,name,a", "expected '('"),
        ("(eq,name,a)(eq,name,b)", "expected ';'"),
        ("(eq,name,a);", "expected '('"),
        ("(eq,a//b,1)", "empty attribute name"),
        ("(eq,~x,1)", "invalid escape '~x'"),
        ("(eq,metadata/@key,1)", "'@key'"),
        ("(eq,name,a\x00)", "NUL"),
        ("", "empty filter"),
        ("()", "expected '(operator,attribute,value)'"),
    ],
)
def test_syntax_errors(text: str, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert reason in info.value.reason


def test_limits() -> None:
    parse_filter(";".join(["(eq,a,1)"] * MAX_CONDITIONS))
    with pytest.raises(FilterError, match="at most 32"):
        parse_filter(";".join(["(eq,a,1)"] * (MAX_CONDITIONS + 1)))
    parse_filter("(in,a," + ",".join(["v"] * MAX_VALUES) + ")")
    with pytest.raises(FilterError, match="at most 100 values"):
        parse_filter("(in,a," + ",".join(["v"] * (MAX_VALUES + 1)) + ")")
    with pytest.raises(FilterError, match="longer than 4096"):
        parse_filter("(eq,a," + "v" * MAX_FILTER_LENGTH + ")")


def test_format_refuses_invalid_expressions() -> None:
    with pytest.raises(FilterError, match="exactly one value"):
        format_filter(FilterExpr((Condition("eq", ("a",), ("1", "2")),)))
    with pytest.raises(FilterError, match="empty attribute name"):
        format_filter(FilterExpr((Condition("eq", ("a", ""), ("1",)),)))


_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",')(;/ ~@\"%_\\")),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    ),
    max_size=12,
)


@st.composite
def _conditions(draw: st.DrawFn) -> Condition:
    op = draw(st.sampled_from(sorted(ONE_VALUE_OPERATORS | MULTI_VALUE_OPERATORS)))
    count = 1 if op in ONE_VALUE_OPERATORS else draw(st.integers(1, 5))
    path = tuple(draw(st.lists(_TEXT.filter(bool), min_size=1, max_size=4)))
    return Condition(op, path, tuple(draw(_TEXT) for _ in range(count)))


@given(st.lists(_conditions(), min_size=1, max_size=6).map(lambda items: FilterExpr(tuple(items))))
@settings(max_examples=300)
def test_format_then_parse_is_identity(expr: FilterExpr) -> None:
    text = format_filter(expr)
    assert len(text) <= MAX_FILTER_LENGTH
    assert parse_filter(text) == expr
    assert format_filter(parse_filter(text)) == text


@given(st.text(alphabet=st.sampled_from(list("(),;'/~@abeqinltcos ")), max_size=40))
@settings(max_examples=300)
def test_parser_only_raises_filter_errors(text: str) -> None:
    try:
        expr = parse_filter(text)
    except FilterError as error:
        assert error.reason
    else:
        assert parse_filter(format_filter(expr)) == expr


# --------------------------------------------------------------------------- typing


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(eq,foo/bar,1)", "unknown attribute 'foo/bar'"),
        ("(eq,nics,1)", "attribute 'nics' is a structure"),
        ("(eq,nics/ipAddress/x,1)", "unknown attribute 'nics/ipAddress/x'"),
        ("(eq,count,abc)", "'abc' is not an integer for attribute 'count'"),
        ("(eq,count,1.5)", "'1.5' is not an integer for attribute 'count'"),
        ("(eq,count,1_000)", "is not an integer"),
        ("(eq,count,99999999999999999999)", "out of range"),
        ("(gt,ratio,nan)", "not a finite number"),
        ("(gt,ratio,1e999)", "not a finite number"),
        ("(eq,enabled,yes)", "not a boolean"),
        ("(eq,colour,PURPLE)", "'PURPLE' is not an allowed value for attribute 'colour' "
                               "(allowed: RED, GREEN)"),
        ("(in,mode,fast,medium)", "'medium' is not an allowed value for attribute 'mode'"),
        ("(gt,createdAt,yesterday)", "not an ISO 8601 date-time for attribute 'createdAt'"),
        ("(cont,count,1)", "operator 'cont' applies to strings only"),
        ("(ncont,colour,RED)", "applies to strings only"),
        ("(gt,enabled,true)", "operator 'gt' does not apply to boolean attribute 'enabled'"),
        ("(lt,colour,RED)", "does not apply to enum attribute"),
    ],
)
def test_attribute_and_value_errors(text: str, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        evaluate(parse_filter(text), _doc(), SCHEMA)
    assert reason in info.value.reason


# --------------------------------------------------------------------------- evaluation


def test_scalar_operators() -> None:
    doc = _doc(name="alpha", count=3, ratio=0.5, enabled=True, colour="GREEN", mode="fast")
    assert _matches("(eq,name,alpha);(neq,name,Alpha);(gt,count,2);(lte,count,3)", doc)
    assert _matches("(in,colour,RED,GREEN);(nin,mode,slow);(eq,enabled,true)", doc)
    assert _matches("(cont,name,lph,zzz);(ncont,name,ALP)", doc)
    assert _matches("(gt,name,Z);(lt,name,b)", doc)  # code-point order: 'Z' < 'a'
    assert _matches("(gte,ratio,0.5);(lt,ratio,5e-1)", doc) is False
    assert _matches("(cont,name,'')", doc)


def test_missing_attributes_fail_positive_and_pass_negated_operators() -> None:
    doc = _doc()
    for text in ("(eq,name,x)", "(gt,count,0)", "(in,colour,RED)", "(cont,name,'')",
                 "(eq,metadata/k,v)"):
        assert not _matches(text, doc), text
    for text in ("(neq,name,x)", "(nin,colour,RED)", "(ncont,name,'')", "(neq,metadata/k,v)"):
        assert _matches(text, doc), text


def test_arrays_match_any_element_and_negations_match_none() -> None:
    nics = [{"ipAddress": "10.0.0.1", "speed": 10}, {"ipAddress": "10.0.0.2"}]
    doc = _doc(nics=nics, tags=["a", "b"])
    assert _matches("(eq,nics/ipAddress,10.0.0.2)", doc)
    assert _matches("(gt,nics/speed,5)", doc)
    assert not _matches("(neq,nics/ipAddress,10.0.0.2)", doc)
    assert _matches("(neq,nics/ipAddress,10.0.0.3)", doc)
    assert not _matches("(nin,tags,b,c)", doc)
    assert _matches("(nin,tags,c)", doc)
    assert _matches("(ncont,nics/ipAddress,192.)", doc)
    # each condition picks its own element
    assert _matches("(eq,nics/ipAddress,10.0.0.2);(eq,nics/speed,10)", doc)
    empty = _doc(nics=[], tags=[])
    assert not _matches("(eq,tags,a)", empty)
    assert _matches("(neq,tags,a)", empty) and _matches("(nin,nics/speed,1)", empty)


def test_metadata_keys() -> None:
    doc = _doc(metadata={"cluster": "c1", "a/b": "slash", "x,y": "comma", "@k": "at"})
    assert _matches("(eq,metadata/cluster,c1)", doc)
    assert _matches("(eq,metadata/a~1b,slash);(eq,metadata/x~ay,comma);(eq,metadata/~bk,at)", doc)
    with pytest.raises(FilterError, match="unknown attribute 'metadata/a/b'"):
        _matches("(eq,metadata/a/b,slash)", doc)


def test_datetimes_compare_as_instants() -> None:
    doc = _doc(createdAt="2024-03-01T12:00:00.250000+02:00")
    assert _matches("(eq,createdAt,2024-03-01T10:00:00.25Z)", doc)
    assert _matches("(gt,createdAt,2024-03-01T10:00:00Z)", doc)
    assert _matches("(lt,createdAt,2024-03-01T10:00:00.250001)", doc)
    assert _matches("(gte,createdAt,2024-03-01)", doc)
    assert not _matches("(lt,createdAt,2024-03-01T11:00:00+01:00)", doc)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
        timezones=st.none() | st.timezones() | st.builds(
            lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439)
        ),
    )
)
def test_document_datetime_key_reads_what_pydantic_writes(moment: datetime) -> None:
    class Stamp(BaseModel):
        at: datetime

    # pydantic writes whole-minute offsets (historic zones have seconds), so compare with the text
    text = Stamp(at=moment).model_dump(mode="json")["at"]
    stored = datetime.fromisoformat(text)
    expected = datetime_key(stored if stored.tzinfo else stored.replace(tzinfo=timezone.utc))
    assert document_datetime_key(text) == expected

"""SOL 013 5.3 attribute selectors: combinations, defaults, validation and application."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from vimkit.api.selectors import Selector, SelectorError, parse_selectors
from vimkit.store.filter_sql import FilterSchema


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Cpu(_Camel):
    num_virtual_cpu: int
    pinning: dict[str, str] | None = None


class Sub(_Camel):
    value: int = 0


class Item(_Camel):
    item_id: str
    sub: Sub | None = None
    extra: Sub | None = None


class Inner(_Camel):
    label: str | None = None
    deep: Sub | None = None
    items: list[Item] = Field(default_factory=list)


class Links(BaseModel):
    self: dict[str, str]


class Resource(_Camel):
    resource_id: str
    name: str | None = None
    virtual_cpu: Cpu
    inner: Inner | None = None
    tags: list[str] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    links: Links = Field(alias="_links")


SCHEMA = FilterSchema.from_model(Resource, sa.column("body", sa.JSON()))
DEFAULT_EXCLUDED = frozenset({"inner", "metadata"})

DOC: dict[str, Any] = {
    "resourceId": "r1",
    "name": "n",
    "virtualCpu": {"numVirtualCpu": 2, "pinning": {"a": "b"}},
    "inner": {
        "label": "l",
        "deep": {"value": 1},
        "items": [
            {"itemId": "i1", "sub": {"value": 2}, "extra": {"value": 3}},
            {"itemId": "i2", "sub": None},
        ],
    },
    "tags": ["t"],
    "metadata": {"k": "v"},
    "_links": {"self": {"href": "/r/r1"}},
}


def _select(**params: str | None) -> Selector:
    names = ("all_fields", "fields", "exclude_fields", "exclude_default")
    values = {name: params.get(name) for name in names}
    selector = parse_selectors(**values)  # type: ignore[arg-type]
    selector.validate(SCHEMA)
    return selector


def _apply(**params: str | None) -> dict[str, Any]:
    return _select(**params).apply(DOC, DEFAULT_EXCLUDED)


def _without(doc: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key not in names}


def test_selectable_attributes_follow_cardinality() -> None:
    assert SCHEMA.selectable_attributes() == frozenset(
        {"virtualCpu/pinning", "inner", "inner/deep", "inner/items", "inner/items/sub",
         "inner/items/extra", "tags", "metadata"}
    )


def test_defaults_for_collections_and_individual_resources() -> None:
    assert parse_selectors(None, None, None, None) == Selector("exclude_default")
    individual = parse_selectors(None, None, None, None, individual=True)
    assert individual == Selector("all_fields")
    assert _apply() == _without(DOC, "inner", "metadata")
    assert individual.apply(DOC, DEFAULT_EXCLUDED) == DOC
    # an individual resource honours explicit selectors all the same
    assert parse_selectors(None, None, None, "", individual=True) == Selector("exclude_default")


def test_all_fields() -> None:
    assert _apply(all_fields="") == DOC
    assert _apply(all_fields="true") == DOC


def test_exclude_default() -> None:
    assert _apply(exclude_default="") == _without(DOC, "inner", "metadata")
    assert _select(exclude_default="").apply(DOC, frozenset()) == DOC


def test_exclude_fields_removes_only_the_named_ones() -> None:
    result = _apply(exclude_fields="tags,inner/items/sub,virtualCpu/pinning")
    expected = copy.deepcopy(DOC)
    del expected["tags"], expected["virtualCpu"]["pinning"]
    for item in expected["inner"]["items"]:
        item.pop("sub")
    assert result == expected


def test_fields_keeps_simple_and_mandatory_attributes() -> None:
    result = _apply(fields="tags")
    assert result == {
        "resourceId": "r1", "name": "n", "virtualCpu": {"numVirtualCpu": 2}, "tags": ["t"],
        "_links": {"self": {"href": "/r/r1"}},
    }


def test_fields_with_a_nested_path_through_an_array() -> None:
    result = _apply(fields="inner/items/sub")
    assert result["inner"] == {
        "label": "l",
        "items": [{"itemId": "i1", "sub": {"value": 2}}, {"itemId": "i2", "sub": None}],
    }
    assert "metadata" not in result and "tags" not in result


def test_fields_naming_a_parent_keeps_all_of_it() -> None:
    result = _apply(fields="inner,metadata")
    assert result["inner"] == DOC["inner"] and result["metadata"] == DOC["metadata"]
    assert "tags" not in result and "pinning" not in result["virtualCpu"]


def test_exclude_default_with_fields() -> None:
    result = _apply(exclude_default="", fields="metadata")
    assert result == _without(DOC, "inner")
    nested = _apply(exclude_default="", fields="inner/deep")
    # 'inner' is kept for the named 'inner/deep'; its other attributes are not in the default set
    assert nested["inner"] == DOC["inner"] and "metadata" not in nested


def test_apply_does_not_modify_its_input() -> None:
    before = copy.deepcopy(DOC)
    _apply(fields="tags")
    _apply(exclude_fields="inner/items/sub")
    assert DOC == before


@pytest.mark.parametrize(
    ("params", "param", "reason"),
    [
        ({"all_fields": "", "fields": "tags"}, "all_fields", "cannot be combined with 'fields'"),
        ({"all_fields": "", "exclude_default": ""}, "all_fields", "'exclude_default'"),
        ({"all_fields": "", "exclude_fields": "tags"}, "all_fields", "'exclude_fields'"),
        ({"fields": "tags", "exclude_fields": "inner"}, "exclude_fields", "'fields'"),
        ({"exclude_fields": "tags", "exclude_default": ""}, "exclude_fields", "'exclude_default'"),
        ({"all_fields": "false"}, "all_fields", "is a flag"),
        ({"exclude_default": "no"}, "exclude_default", "is a flag"),
        ({"fields": ""}, "fields", "at least one attribute"),
        ({"exclude_fields": "tags,,inner"}, "exclude_fields", "empty attribute name"),
        ({"fields": "inner//deep"}, "fields", "empty attribute name"),
    ],
)
def test_invalid_combinations_and_syntax(params: dict[str, str], param: str, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        _select(**params)
    assert info.value.param == param
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("params", "param", "reason"),
    [
        ({"fields": "nope"}, "fields", "unknown attribute 'nope'"),
        ({"fields": "inner/nope"}, "fields", "unknown attribute 'inner/nope'"),
        ({"exclude_fields": "name"}, "exclude_fields", "'name' cannot be selected"),
        ({"exclude_fields": "virtualCpu"}, "exclude_fields", "'virtualCpu' cannot be selected"),
        ({"fields": "_links"}, "fields", "'_links' cannot be selected"),
        ({"fields": "inner/items/itemId"}, "fields", "cannot be selected"),
        ({"exclude_default": "", "fields": "resourceId"}, "fields", "cannot be selected"),
    ],
)
def test_validation_against_the_model(params: dict[str, str], param: str, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        _select(**params)
    assert info.value.param == param
    assert reason in info.value.reason


def test_fields_needs_validation_first() -> None:
    with pytest.raises(RuntimeError, match="validate"):
        parse_selectors(None, "tags", None, None).apply(DOC, DEFAULT_EXCLUDED)

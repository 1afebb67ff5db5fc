"""Collection GETs: SOL 013 filter, attribute selectors, sorting and opaque-marker paging.

A list handler declares ``params: ListParams = Depends(list_params)``, turns it into a store
query with :func:`prepare_listing` and answers with :func:`page_response`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request
from sqlalchemy import ColumnElement
from starlette.responses import Response

from vimkit.api.filters import FilterError, parse_filter
from vimkit.api.json import dumps
from vimkit.api.problems import invalid
from vimkit.api.resources import base_url
from vimkit.api.selectors import Selector, SelectorError, parse_selectors
from vimkit.store.filter_sql import FilterSchema, compile_filter, compile_sort
from vimkit.store.repository import PageRequest


@dataclass(frozen=True)
class ListParams:
    filter: str | None
    all_fields: str | None
    fields: str | None
    exclude_fields: str | None
    exclude_default: str | None
    nextpage_opaque_marker: str | None
    sort: str | None


async def list_params(
    filter: str | None = Query(
        None,
        min_length=1,
        description="SOL 013 attribute-based filter, e.g. `(eq,flavourId,m1.small);"
        "(gte,virtualCpu/numVirtualCpu,2)`.",
    ),
    all_fields: str | None = Query(None, description="SOL 013: include all attributes."),
    fields: str | None = Query(None, min_length=1, description="SOL 013: complex attributes to include."),
    exclude_fields: str | None = Query(None, min_length=1, description="SOL 013: attributes to exclude."),
    exclude_default: str | None = Query(
        None, description="SOL 013: exclude the default-excluded attributes."
    ),
    nextpage_opaque_marker: str | None = Query(
        None, min_length=1, description="Marker from the previous page's Link header."
    ),
    sort: str | None = Query(
        None,
        min_length=1,
        description="Extension: comma-separated attribute paths, `-` prefix for descending, "
        "e.g. `-virtualMemory/virtualMemSize,flavourId`. Default: creation order.",
    ),
) -> ListParams:
    return ListParams(
        filter, all_fields, fields, exclude_fields, exclude_default, nextpage_opaque_marker, sort
    )


@dataclass(frozen=True)
class PreparedListing:
    page: PageRequest
    where: ColumnElement[bool] | None
    selector: Selector


def _sort_keys(text: str) -> list[tuple[tuple[str, ...], bool]]:
    keys: list[tuple[tuple[str, ...], bool]] = []
    for raw in text.split(","):
        raw = raw.strip()
        descending = raw.startswith("-")
        path = raw[1:] if descending else raw
        if not path:
            raise invalid("sort", "empty sort key")
        keys.append((tuple(path.split("/")), descending))
    if len(keys) > 8:
        raise invalid("sort", "at most 8 sort keys")
    return keys


def prepare_listing(
    params: ListParams, schema: FilterSchema, dialect_name: str, page_size: int
) -> PreparedListing:
    where = None
    if params.filter is not None:
        try:
            where = compile_filter(parse_filter(params.filter), schema, dialect_name)
        except FilterError as exc:
            raise invalid("filter", exc.reason) from exc
    sort: list[ColumnElement[Any]] = []
    if params.sort:
        try:
            sort = compile_sort(_sort_keys(params.sort), schema)
        except FilterError as exc:
            raise invalid("sort", exc.reason) from exc
    try:
        selector = parse_selectors(
            params.all_fields, params.fields, params.exclude_fields, params.exclude_default
        )
        selector.validate(schema)
    except SelectorError as exc:
        raise invalid(exc.param, exc.reason) from exc
    return PreparedListing(PageRequest(page_size, params.nextpage_opaque_marker, sort), where, selector)


def page_response(
    request: Request,
    documents: Iterable[dict[str, Any]],
    next_marker: str | None,
    selector: Selector,
    default_excluded: frozenset[str] = frozenset(),
    decorate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    body = []
    for document in documents:
        if decorate is not None:
            document = decorate(document)
        selected = selector.apply(document, default_excluded)
        if "_links" in document:
            selected["_links"] = document["_links"]  # SOL 013: links are never selected away
        body.append(selected)
    return Response(dumps(body), media_type="application/json", headers=_paging_headers(request, next_marker))


def text_page_response(
    request: Request,
    documents: Iterable[tuple[str, str]],
    next_marker: str | None,
    self_path: Callable[[str], str],
) -> Response:
    """:func:`page_response` for documents kept whole, given as ``(id, stored JSON text)``: each
    is sent as stored with its ``_links`` appended, without being decoded and encoded again.
    The JSON is the same as :func:`page_response` writes (on PostgreSQL, with the spaces its
    ``jsonb`` text has)."""
    base = base_url(request)
    items = []
    for resource_id, text in documents:
        head = text.rstrip()[:-1].rstrip()  # the object without its closing brace
        separator = "" if head.endswith("{") else ","
        link = dumps(f"{base}{self_path(resource_id)}").decode()
        items.append(f'{head}{separator}"_links":{{"self":{{"href":{link}}}}}}}')
    return Response(f"[{','.join(items)}]".encode(), media_type="application/json",
                    headers=_paging_headers(request, next_marker))


def _paging_headers(request: Request, next_marker: str | None) -> dict[str, str]:
    if next_marker is None:
        return {}
    next_url = request.url.include_query_params(nextpage_opaque_marker=next_marker)
    return {"Link": f'<{next_url}>; rel="next"'}

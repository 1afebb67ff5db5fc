"""Helpers for single-resource responses: ETag, conditional GET, ``_links``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response

from vimkit.api.json import dumps
from vimkit.store.models import DocumentMixin
from vimkit.store.repository import etag_of

T = TypeVar("T")


async def point_read(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """A key lookup for a route (see :meth:`vimkit.store.db.Database.point_read`)."""
    return await request.app.state.services.database.point_read(fn, *args)


def base_url(request: Request) -> str:
    """The request's base URL without its trailing slash, worked out once per request (a list
    page links each of its items)."""
    scope = request.scope
    base = scope.get("vimkit.base_url")
    if base is None:
        # Starlette builds and parses a URL object for it (about 70 µs): remember the few
        # distinct answers by what they are made of.
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        key = (scope.get("scheme"), host, scope.get("server"), scope.get("root_path"), scope.get("app_root_path"))
        base = _BASE_URLS.get(key)
        if base is None:
            base = str(request.base_url).rstrip("/")
            if len(_BASE_URLS) < 256:  # Host headers are the client's choice: keep the cache small
                _BASE_URLS[key] = base
        scope["vimkit.base_url"] = base
    return base


_BASE_URLS: dict[tuple[Any, ...], str] = {}


def with_self_link(request: Request, document: dict[str, Any], path: str) -> dict[str, Any]:
    base = base_url(request)
    return {**document, "_links": {"self": {"href": f"{base}{path}"}}}


def document_response(
    request: Request,
    row: DocumentMixin,
    document: dict[str, Any],
    status_code: int = 200,
    location: str | None = None,
) -> Response:
    etag = etag_of(row)
    headers = {"ETag": etag}
    if location is not None:
        headers["Location"] = location
    if request.method == "GET" and status_code == 200:
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and (if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]):
            return Response(status_code=304, headers=headers)
    return Response(dumps(document), status_code=status_code, media_type="application/json", headers=headers)

"""RFC 9457 problem details for every error the server returns (rest-binding.md §1.3).

Domain code raises :class:`ApiError` (or one of its helpers); the handlers installed by
:func:`install_problem_handlers` also turn the framework's own 404/405/422 and any unexpected
exception into ``application/problem+json`` so that a client only ever parses one error shape.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from vimkit.api.json import dumps

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("vimkit.api")


class Cause(str, Enum):
    INVALID_INPUT = "INVALID_INPUT"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    CONFLICT = "CONFLICT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    NO_CAPACITY = "NO_CAPACITY"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    AFFINITY_UNSATISFIABLE = "AFFINITY_UNSATISFIABLE"
    RATE_LIMITED = "RATE_LIMITED"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    INTERNAL = "INTERNAL"


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_DEFAULT_CAUSE = {
    400: Cause.INVALID_INPUT,
    401: Cause.UNAUTHORIZED,
    403: Cause.FORBIDDEN,
    404: Cause.NOT_FOUND,
    405: Cause.METHOD_NOT_ALLOWED,
    406: Cause.NOT_ACCEPTABLE,
    409: Cause.CONFLICT,
    412: Cause.PRECONDITION_FAILED,
    413: Cause.PAYLOAD_TOO_LARGE,
    415: Cause.UNSUPPORTED_MEDIA_TYPE,
    422: Cause.INVALID_INPUT,
    429: Cause.RATE_LIMITED,
    503: Cause.BACKEND_UNAVAILABLE,
}

_RETRYABLE = {Cause.RATE_LIMITED, Cause.BACKEND_UNAVAILABLE, Cause.NO_CAPACITY, Cause.INTERNAL}


class InvalidParam(BaseModel):
    name: str = Field(description="The offending field: a JSON path into the body or a parameter.")
    reason: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details with the vimkit extensions ``cause``, ``retryable``, ``invalidParams``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:vimkit:problem:<cause in kebab case>")
    title: str
    status: int
    detail: str
    instance: str | None = None
    cause: Cause = Field(description="Extension: machine-readable cause.")
    retryable: bool = Field(description="Extension: whether retrying the same request may succeed.")
    invalidParams: list[InvalidParam] | None = Field(
        None, description="Extension: each invalid field with the reason."
    )


def problem_type(cause: Cause) -> str:
    return "urn:vimkit:problem:" + cause.value.lower().replace("_", "-")


class ApiError(Exception):
    """An error answered as problem details. Raise it anywhere below the API layer too."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        cause: Cause | None = None,
        invalid_params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.cause = cause or _DEFAULT_CAUSE.get(status, Cause.INTERNAL)
        self.invalid_params = invalid_params
        self.headers = headers or {}
        self.retryable = self.cause in _RETRYABLE if retryable is None else retryable


def invalid(name: str, reason: str, status: int = 400) -> ApiError:
    """A 400 naming one bad field or parameter."""
    return ApiError(status, f"{name}: {reason}", invalid_params=[(name, reason)])


def not_found(kind: str, resource_id: str) -> ApiError:
    return ApiError(404, f"{kind} '{resource_id}' does not exist")


def conflict(detail: str, cause: Cause = Cause.CONFLICT) -> ApiError:
    return ApiError(409, detail, cause=cause)


def problem_body(error: ApiError, instance: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": problem_type(error.cause),
        "title": _TITLES.get(error.status, "Error"),
        "status": error.status,
        "detail": error.detail,
        "cause": error.cause.value,
        "retryable": error.retryable,
    }
    if instance:
        body["instance"] = instance
    if error.invalid_params:
        body["invalidParams"] = [{"name": n, "reason": r} for n, r in error.invalid_params]
    return body


def problem_response(error: ApiError, instance: str | None = None) -> Response:
    return Response(
        dumps(problem_body(error, instance)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers,
    )


def _location_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'virtualCpu', 'numVirtualCpu')`` → ``virtualCpu/numVirtualCpu`` (SOL path style)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    # pydantic inserts the tag of a function validator or a union member; drop those internals.
    cleaned = [str(p) for p in parts if not (isinstance(p, str) and p.startswith("function-"))]
    return "/".join(cleaned) or (str(loc[0]) if loc else "body")


def validation_error(exc: RequestValidationError) -> ApiError:
    params: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        name = _location_name(loc)
        if err.get("type") == "json_invalid":
            name = "body"
        params.append((name, str(err.get("msg", "invalid"))))
    detail = "; ".join(f"{name}: {reason}" for name, reason in params[:5])
    return ApiError(400, detail or "invalid request", invalid_params=params)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route offers on this path, for the ``Allow`` header of a 405."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "route_table", ()):
        if route.path_regex.match(request.url.path):
            methods |= set(route.methods or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(validation_error(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed_methods(request))
        error = ApiError(exc.status_code, detail, headers=headers)
        return problem_response(error, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        error = ApiError(500, "internal error; the request id is in the server log", cause=Cause.INTERNAL)
        return problem_response(error, request.url.path)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ProblemDetails,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        "description": _TITLES[status],
    }
    for status in (400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 422, 429, 500, 503)
}

"""The route class every API router uses: unknown query parameters and ``Idempotency-Key``.

Doing both here, around the handler, means no handler can forget them.
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Awaitable, Callable

import orjson

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from vimkit.api.auth import authenticate, check_scope, current_principal
from vimkit.api.problems import ApiError, invalid, problem_response
from vimkit.store.idempotency import StoredResponse

MAX_IDEMPOTENCY_KEY = 255
# Response headers that describe the original exchange and must not be replayed verbatim.
_NOT_REPLAYED = {"content-length", "date", "server", "x-request-id"}


def _walk(dependant: Dependant) -> list[Dependant]:
    found = [dependant]
    for sub in dependant.dependencies:
        found.extend(_walk(sub))
    return found


class VimRoute(APIRoute):
    direct_body = False  # see _direct_body_handler
    direct_path = False  # see _direct_path_handler

    def _allowed_query_names(self) -> frozenset[str]:
        names = getattr(self, "_vimkit_query_names", None)
        if names is None:
            names = frozenset(param.alias for dep in _walk(self.dependant) for param in dep.query_params)
            self._vimkit_query_names = names
        return names

    def required_scope(self) -> str | None:
        """The scope this route's dependencies demand, or None for a public route."""
        for dependency in _walk(self.dependant):
            scope = getattr(dependency.call, "required_scope", None)
            if scope:
                return scope
        return None

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        handler = self._direct_body_handler(handler) if self.dependant.body_params else self._direct_path_handler(handler)

        scope = self.required_scope()

        async def vimkit_handler(request: Request) -> Response:
            if scope is not None:
                # Who is calling comes before what they asked: 401/403 beat a bad parameter.
                check_scope(authenticate(request), scope)
            allowed = self._allowed_query_names()
            for name in request.query_params.keys():
                if name not in allowed:
                    raise invalid(name, "unknown query parameter")
            key = request.headers.get("idempotency-key")
            if request.method != "POST" or key is None:
                return await handler(request)
            return await _idempotent(request, key, handler)

        return vimkit_handler

    def _direct_body_handler(self, handler: Callable[[Request], Awaitable[Response]]
                             ) -> Callable[[Request], Awaitable[Response]]:
        """For a ``POST`` that takes only a JSON body model, the request and the caller: parse,
        validate and call the endpoint directly. FastAPI's general handler (content negotiation,
        dependency solving, exit stacks) cost about as much as creating a port itself. Anything
        unusual — another content type, a body that does not parse or validate, dependency
        overrides — goes to FastAPI's handler, so errors and edge cases answer exactly as before."""
        dependant = self.dependant
        if (len(dependant.body_params) != 1 or self._embed_body_fields or dependant.request_param_name is None
                or dependant.query_params or dependant.path_params or dependant.header_params
                or dependant.cookie_params or not inspect.iscoroutinefunction(self.endpoint)):
            return handler
        field = dependant.body_params[0]

        async def arguments_of(request: Request) -> dict[str, object] | None:
            content_type = request.headers.get("content-type", "")
            if content_type.partition(";")[0].strip().lower() != "application/json":
                return None
            try:
                data = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return None
            value, errors = field.validate(data, {}, loc=("body",))
            return None if errors else {field.name: value}

        direct = self._shortcut(handler, arguments_of)
        self.direct_body = direct is not handler
        return direct

    def _direct_path_handler(self, handler: Callable[[Request], Awaitable[Response]]
                             ) -> Callable[[Request], Awaitable[Response]]:
        """:meth:`_direct_body_handler` for a route that takes only path parameters, the request
        and the caller (a GET, DELETE or POST of one resource by id): FastAPI's dependency
        solving was about a quarter of the CPU of a GET of one flavour. A path parameter that
        does not validate goes to FastAPI's handler, which answers exactly as before."""
        dependant = self.dependant
        if (dependant.body_params or dependant.request_param_name is None or not dependant.path_params
                or dependant.query_params or dependant.header_params or dependant.cookie_params
                or not inspect.iscoroutinefunction(self.endpoint)):
            return handler
        fields = [(param, ("path", param.alias)) for param in dependant.path_params]

        async def arguments_of(request: Request) -> dict[str, object] | None:
            arguments: dict[str, object] = {}
            path_params = request.path_params
            for field, loc in fields:
                value, errors = field.validate(path_params.get(field.alias), {}, loc=loc)
                if errors:
                    return None
                arguments[field.name] = value
            return arguments

        direct = self._shortcut(handler, arguments_of)
        self.direct_path = direct is not handler
        return direct

    def _shortcut(self, handler: Callable[[Request], Awaitable[Response]],
                  arguments_of: Callable[[Request], Awaitable[dict[str, object] | None]]
                  ) -> Callable[[Request], Awaitable[Response]]:
        """Call the endpoint with what ``arguments_of`` makes of the request, the request itself
        and the caller; FastAPI's ``handler`` when it makes nothing of it (None), when the route
        has what only FastAPI runs (see :meth:`_principal_names`), or under dependency overrides."""
        principal_names = self._principal_names()
        if principal_names is None:
            return handler
        request_name = self.dependant.request_param_name
        assert request_name is not None
        endpoint = self.endpoint
        overrides = self.dependency_overrides_provider

        async def direct(request: Request) -> Response:
            if getattr(overrides, "dependency_overrides", None):
                return await handler(request)
            arguments = await arguments_of(request)
            if arguments is None:
                return await handler(request)
            arguments[request_name] = request
            if principal_names:
                principal = authenticate(request)
                for name in principal_names:
                    arguments[name] = principal
            return await endpoint(**arguments)

        return direct

    def _principal_names(self) -> list[str] | None:
        """The endpoint's parameters that take the caller; None if it has a dependency other
        than the caller and scope checks, or a parameter FastAPI fills in itself (the response,
        background tasks…), or returns something FastAPI must validate and serialise: only
        FastAPI's handler knows how to run those."""
        dependant = self.dependant
        if (dependant.response_param_name or dependant.background_tasks_param_name
                or dependant.websocket_param_name or dependant.http_connection_param_name
                or dependant.security_scopes_param_name or not self._returns_response()):
            return None
        names: list[str] = []
        for dependency in self.dependant.dependencies:
            if dependency.call is current_principal and dependency.name:
                names.append(dependency.name)
            elif not (getattr(dependency.call, "required_scope", None) and dependency.name is None):
                return None
        return names

    def _returns_response(self) -> bool:
        try:
            returns = typing.get_type_hints(self.endpoint).get("return")
        except Exception:  # noqa: BLE001 - unresolvable hints: keep FastAPI's handler
            return False
        # Otherwise FastAPI would validate and serialise what the endpoint returns.
        return inspect.isclass(returns) and issubclass(returns, Response)


async def _idempotent(
    request: Request, key: str, handler: Callable[[Request], Awaitable[Response]]
) -> Response:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise invalid("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    principal = authenticate(request)
    body = await request.body()
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query, ""):
        digest.update(part.encode() + b"\0")
    digest.update(_canonical(body))
    store = request.app.state.services.idempotency
    stored = await store.claim_soon(principal.consumer_id, key, digest.hexdigest())
    if stored is not None:
        headers = {name: value for name, value in stored.headers}
        headers["Idempotent-Replayed"] = "true"
        return Response(stored.body, status_code=stored.status_code, headers=headers)
    try:
        response = await handler(request)
    except ApiError as error:
        response = problem_response(error, request.url.path)
    except BaseException:
        await run_in_threadpool(store.release, principal.consumer_id, key)
        raise
    if response.status_code >= 500:
        await run_in_threadpool(store.release, principal.consumer_id, key)
        return response
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")]
        for name, value in response.raw_headers
        if name.decode("latin-1").lower() not in _NOT_REPLAYED
    ]
    record = StoredResponse(response.status_code, headers, bytes(response.body))
    await store.finish_soon(principal.consumer_id, key, record)
    return response


def _canonical(body: bytes) -> bytes:
    """A retry carries the same request, not necessarily the same bytes: JSON is compared by
    value (key order and whitespace do not matter), anything else byte for byte."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else body
    except orjson.JSONDecodeError:
        return body

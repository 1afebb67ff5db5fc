"""Route dispatch by API root.

Starlette finds a request's route by trying every route's path regex in turn. With the nine API
roots and their subscriptions vimkit has about 150 routes, and that scan was more than a quarter
of the CPU of a small request (``POST /network/v1/ports`` tried over 100 regexes first). Routes of
different roots (``/compute/v1``, ``/network/v1`` …) can never match the same path, so the
routes a request can match are those of its root; they are tried in their original order, so
which route wins (and a 405 for a known path with another method) is exactly what the full scan
would decide. Anything the index does not settle — an unknown root, no match among its routes,
a non-HTTP scope — goes to the router's own full scan, which also keeps its 404 and
redirect-slashes behaviour.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match, Route, Router
from starlette.types import Receive, Scope, Send


def root_of(path: str) -> str | None:
    """The first two segments of a path (``/network/v1``), or None when a parameter is in them."""
    parts = path.split("/", 3)
    root = "/".join(parts[:3])
    return None if "{" in root else root


class RouteIndex:
    def __init__(self, router: Router) -> None:
        self.full_scan = router.app
        self.router = router
        # Router-wide form limits are put into the scope by the full scan only.
        self.router_has_form_limits = bool(getattr(router, "form_limits", None))
        routes = list(router.routes)
        # A route whose root cannot be known (a parameter in it, or a Mount matching by prefix)
        # is a candidate for every request, in its original place.
        unindexed = {id(route) for route in routes if not isinstance(route, Route) or root_of(route.path) is None}
        roots = {root_of(route.path) for route in routes if id(route) not in unindexed}
        # With each route, the regex its path must match (None: ask the route itself).
        self.by_root: dict[str, list[tuple[Any, Any]]] = {
            root: [(route, route.path_regex if isinstance(route, Route) else None) for route in routes
                   if id(route) in unindexed or root_of(route.path) == root]  # type: ignore[attr-defined]
            for root in roots if root is not None
        }

    def select(self, scope: Scope) -> tuple[Any, Scope] | None:
        """The route the full scan would pick for this request and its child scope, or None when
        only the full scan can tell (unknown root, no match: 404 or a slash redirect)."""
        candidates = self.by_root.get(root_of(scope["path"]) or "")
        if candidates is None:
            return None
        partial: tuple[Any, Scope] | None = None
        path = scope["path"]
        for route, pattern in candidates:
            # The bare regex first: most candidates fail it, and matches() costs ten times more.
            if pattern is not None and pattern.match(path) is None:
                continue
            match, child_scope = route.matches(scope)
            if match == Match.FULL:
                return route, child_scope
            if match == Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # select() compares the bare path: with a root path, the full scan.
        if scope["type"] != "http" or scope.get("root_path") or self.router_has_form_limits:
            await self.full_scan(scope, receive, send)
            return
        selected = self.select(scope)
        # A match carrying FastAPI's own scope state is left to the full scan, which merges it.
        if selected is None or any(not isinstance(key, str) or key.startswith("fastapi") for key in selected[1]):
            await self.full_scan(scope, receive, send)
            return
        route, child_scope = selected
        scope.setdefault("router", self.router)
        scope.update(child_scope)
        await route.handle(scope, receive, send)


def install_route_index(router: Router) -> RouteIndex:
    """Put the index in front of ``router`` (after every route has been added)."""
    index = RouteIndex(router)
    router.middleware_stack = index
    return index

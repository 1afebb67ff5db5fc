"""``…/v1/subscriptions`` on every API root (rest-binding.md §6), from one router factory."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import base_url
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.notify.filters import NOTIFICATION_TYPES
from vimkit.notify.subscriptions import SUBSCRIPTION_SCHEMA, Subscription, SubscriptionRequest, representation
from vimkit.store.repository import etag_of

SubscriptionIdPath = Path(description="Identifier of the subscription.", max_length=64)


def build_router(api: str) -> APIRouter:
    prefix = f"/{api}/v1"
    scope = require_scope(f"{api}:subscribe")
    router = APIRouter(
        prefix=prefix,
        route_class=VimRoute,
        tags=[api],
        dependencies=[Depends(scope)],
        responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429)},
    )
    operation = api.replace("-", "_")
    kinds = ", ".join(NOTIFICATION_TYPES[api])

    def render(request: Request, row, pending: int) -> dict:  # type: ignore[no-untyped-def]
        return representation(row, pending, base_url(request), prefix)

    @router.post(
        "/subscriptions",
        status_code=201,
        response_model=Subscription,
        operation_id=f"{operation}_create_subscription",
        summary=f"Subscribe to {kinds}",
        description="The VIM first sends `GET callbackUri` and requires 204; otherwise 422.",
    )
    async def create(body: SubscriptionRequest, request: Request, principal: Principal = Depends(current_principal)) -> Response:
        service = request.app.state.services.subscriptions
        row = await service.create(principal, api, body)
        document = render(request, row, 0)
        return Response(
            dumps(document),
            status_code=201,
            media_type="application/json",
            headers={"Location": document["_links"]["self"]["href"], "ETag": etag_of(row)},
        )

    @router.get(
        "/subscriptions",
        response_model=list[Subscription],
        operation_id=f"{operation}_list_subscriptions",
        summary="Query subscriptions",
    )
    async def list_subscriptions(
        request: Request, params: ListParams = Depends(list_params), principal: Principal = Depends(current_principal)
    ) -> Response:
        services = request.app.state.services
        listing = prepare_listing(params, SUBSCRIPTION_SCHEMA, services.database.dialect, services.settings.page_size)
        page = await run_in_threadpool(services.subscriptions.list, principal, api, listing.page, listing.where)
        pending = await run_in_threadpool(services.subscriptions.pending_counts, [row.id for row in page.items])
        documents = [render(request, row, pending.get(row.id, 0)) for row in page.items]
        return page_response(request, documents, page.next_marker, listing.selector)

    @router.get(
        "/subscriptions/{subscriptionId}",
        response_model=Subscription,
        operation_id=f"{operation}_get_subscription",
        summary="Query one subscription",
    )
    async def get_subscription(
        request: Request, subscriptionId: str = SubscriptionIdPath, principal: Principal = Depends(current_principal)
    ) -> Response:
        service = request.app.state.services.subscriptions
        row, pending = await run_in_threadpool(service.get_with_pending, principal, api, subscriptionId)
        return Response(
            dumps(render(request, row, pending)), media_type="application/json", headers={"ETag": etag_of(row)}
        )

    @router.delete(
        "/subscriptions/{subscriptionId}",
        status_code=204,
        operation_id=f"{operation}_delete_subscription",
        summary="Terminate a subscription",
    )
    async def delete_subscription(
        request: Request, subscriptionId: str = SubscriptionIdPath, principal: Principal = Depends(current_principal)
    ) -> Response:
        service = request.app.state.services.subscriptions
        await run_in_threadpool(service.delete, principal, api, subscriptionId)
        return Response(status_code=204)

    return router

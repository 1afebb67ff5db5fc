"""``/compute/v1``: Virtualised Compute Resources Management (flavours so far)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, point_read, with_self_link
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.domain.flavours import FLAVOUR_SCHEMA
from vimkit.models.compute import ComputeFlavourCreate, VirtualComputeFlavour

PREFIX = "/compute/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["compute"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429)},
)
READ = [Depends(require_scope("compute:read"))]
WRITE = [Depends(require_scope("compute:write"))]
FlavourIdPath = Path(description="Identifier of the compute flavour.", max_length=64)


def _flavour_document(request: Request, body: dict) -> dict:
    return with_self_link(request, body, f"{PREFIX}/flavours/{body['flavourId']}")


@router.post(
    "/flavours",
    status_code=201,
    dependencies=WRITE,
    response_model=VirtualComputeFlavour,
    summary="Create Compute Flavour",
    responses={201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}},
)
async def create_flavour(
    body: ComputeFlavourCreate,
    request: Request,
    principal: Principal = Depends(current_principal),
) -> Response:
    row = await request.app.state.services.flavours.create(principal, body)
    document = _flavour_document(request, row.body)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get(
    "/flavours",
    dependencies=READ,
    response_model=list[VirtualComputeFlavour],
    summary="Query Compute Flavour",
    responses={200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}},
)
async def list_flavours(
    request: Request,
    params: ListParams = Depends(list_params),
    principal: Principal = Depends(current_principal),
) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, FLAVOUR_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.flavours.list, principal, listing.page, listing.where)
    return page_response(
        request,
        (row.body for row in page.items),
        page.next_marker,
        listing.selector,
        decorate=lambda body: _flavour_document(request, body),
    )


@router.get(
    "/flavours/{flavourId}",
    dependencies=READ,
    response_model=VirtualComputeFlavour,
    summary="Query one Compute Flavour",
    responses={304: {"description": "Not modified (If-None-Match)"}},
)
async def get_flavour(
    request: Request,
    flavourId: str = FlavourIdPath,
    principal: Principal = Depends(current_principal),
) -> Response:
    row = await point_read(request, request.app.state.services.flavours.get, principal, flavourId)
    return document_response(request, row, _flavour_document(request, row.body))


@router.delete(
    "/flavours/{flavourId}",
    status_code=204,
    dependencies=WRITE,
    summary="Delete Compute Flavour",
    responses={412: PROBLEM_RESPONSES[412]},
)
async def delete_flavour(
    request: Request,
    flavourId: str = FlavourIdPath,
    if_match: str | None = Header(None, alias="If-Match"),
    principal: Principal = Depends(current_principal),
) -> Response:
    await request.app.state.services.flavours.delete(principal, flavourId, if_match)
    return Response(status_code=204)

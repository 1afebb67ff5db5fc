"""Operator API for the software image registry: ``/admin/v1/images`` (docs/images.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, with_self_link
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.auth.scopes import ADMIN_SCOPE
from vimkit.domain.images import IMAGE_SCHEMA, ImageRegister, SoftwareImage

PREFIX = "/admin/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN_SCOPE))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 412, 413, 422, 429)},
)
ImageIdPath = Path(description="Identifier of the image (what computes give as vcImageId).", max_length=64)


def _document(request: Request, body: dict) -> dict:
    return with_self_link(request, body, f"{PREFIX}/images/{body['imageId']}")


@router.post(
    "/images",
    status_code=201,
    response_model=SoftwareImage,
    summary="Register a software image (kernel+initramfs or disk) by its files on the VIM's host",
    responses={201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}},
)
async def register_image(body: ImageRegister, request: Request,
                         principal: Principal = Depends(current_principal)) -> Response:
    row = await run_in_threadpool(request.app.state.services.images.create, principal, body)
    document = _document(request, row.body)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get(
    "/images",
    response_model=list[SoftwareImage],
    summary="List the software images",
    responses={200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}},
)
async def list_images(request: Request, params: ListParams = Depends(list_params),
                      principal: Principal = Depends(current_principal)) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, IMAGE_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.images.list, principal, listing.page, listing.where)
    return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                         decorate=lambda body: _document(request, body))


@router.get(
    "/images/{imageId}",
    response_model=SoftwareImage,
    summary="Read a software image",
    responses={304: {"description": "Not modified (If-None-Match)"}},
)
async def get_image(request: Request, imageId: str = ImageIdPath,
                    principal: Principal = Depends(current_principal)) -> Response:
    row = await run_in_threadpool(request.app.state.services.images.get, principal, imageId)
    return document_response(request, row, _document(request, row.body))


@router.delete(
    "/images/{imageId}",
    status_code=204,
    summary="Unregister a software image (409 while a compute uses it); its files stay",
)
async def delete_image(request: Request, imageId: str = ImageIdPath,
                       if_match: str | None = Header(None, alias="If-Match"),
                       principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(request.app.state.services.images.delete, principal, imageId, if_match)
    return Response(status_code=204)

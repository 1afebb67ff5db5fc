"""``/storage/v1``: Virtualised Storage Resources Management (rest-binding.md §4, docs/storage.md).

The driver work of every call runs inside the request (the backends answer within seconds), so
allocation answers ``201`` with the final state, task POSTs ``200`` and DELETE ``204`` — the
"finished within ``Prefer: wait``" variants of rest-binding.md §1.5.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, point_read, with_self_link
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.domain.storage import AFFINITY_GROUP_SCHEMA, STORAGE_SCHEMA
from vimkit.models.storage import (
    StorageAffinityGroup,
    StorageAffinityGroupCreate,
    StorageAllocateRequest,
    StorageMigrateRequest,
    StorageOperateRequest,
    StorageOperateResult,
    StorageScaleRequest,
    StorageTerminateRequest,
    StorageTerminateResult,
    StorageUpdateRequest,
    VirtualStorage,
)

PREFIX = "/storage/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["storage"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429, 503)},
)
READ = [Depends(require_scope("storage:read"))]
WRITE = [Depends(require_scope("storage:write"))]
StorageIdPath = Path(description="Identifier of the volume.", max_length=64)
GroupIdPath = Path(description="Identifier of the storage affinity group.", max_length=64)
IF_MATCH = Header(None, alias="If-Match")
CREATED = {201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}}


def _service(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.services.storage


def _storage_document(request: Request, body: dict) -> dict:
    return with_self_link(request, body, f"{PREFIX}/storages/{body['storageId']}")


def _group_document(request: Request, body: dict) -> dict:
    return with_self_link(request, body, f"{PREFIX}/affinity_groups/{body['groupId']}")


@router.post("/storages", status_code=201, dependencies=WRITE, response_model=VirtualStorage,
             summary="Allocate Virtualised Storage Resource", responses=CREATED)
async def allocate_storage(body: StorageAllocateRequest, request: Request,
                           principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).allocate(principal, body)
    document = _storage_document(request, row.body)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get("/storages", dependencies=READ, response_model=list[VirtualStorage],
            summary="Query Virtualised Storage Resource",
            responses={200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}})
async def list_storages(request: Request, params: ListParams = Depends(list_params),
                        principal: Principal = Depends(current_principal)) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, STORAGE_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.storage.list, principal, listing.page, listing.where)
    return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                         decorate=lambda body: _storage_document(request, body))


@router.get("/storages/{storageId}", dependencies=READ, response_model=VirtualStorage,
            summary="Query one Virtualised Storage Resource", responses={304: {"description": "Not modified"}})
async def get_storage(request: Request, storageId: str = StorageIdPath,
                      principal: Principal = Depends(current_principal)) -> Response:
    row = await point_read(request, _service(request).get, principal, storageId)
    return document_response(request, row, _storage_document(request, row.body))


@router.patch("/storages/{storageId}", dependencies=WRITE, response_model=VirtualStorage,
              summary="Update Virtualised Storage Resource", responses={412: PROBLEM_RESPONSES[412]},
              openapi_extra={"requestBody": {"content": {"application/merge-patch+json": {
                  "schema": {"$ref": "#/components/schemas/StorageUpdateRequest"}}}}})
async def update_storage(body: StorageUpdateRequest, request: Request, storageId: str = StorageIdPath,
                         if_match: str | None = IF_MATCH,
                         principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).update(principal, storageId, body, if_match)
    return document_response(request, row, _storage_document(request, row.body))


@router.delete("/storages/{storageId}", status_code=204, dependencies=WRITE,
               summary="Terminate Virtualised Storage Resource", responses={412: PROBLEM_RESPONSES[412]})
async def delete_storage(request: Request, storageId: str = StorageIdPath, if_match: str | None = IF_MATCH,
                         principal: Principal = Depends(current_principal)) -> Response:
    await _service(request).delete(principal, storageId, if_match)
    return Response(status_code=204)


@router.post("/storages/{storageId}/operate", dependencies=WRITE, response_model=StorageOperateResult,
             summary="Operate Virtualised Storage Resource (snapshots)", responses={412: PROBLEM_RESPONSES[412]})
async def operate_storage(body: StorageOperateRequest, request: Request, storageId: str = StorageIdPath,
                          if_match: str | None = IF_MATCH,
                          principal: Principal = Depends(current_principal)) -> Response:
    row, output = await _service(request).operate(principal, storageId, body, if_match)
    document = {**_storage_document(request, row.body), "storageOperationOutputData": output}
    return document_response(request, row, document)


@router.post("/storages/{storageId}/scale", dependencies=WRITE, response_model=VirtualStorage,
             summary="Scale Virtualised Storage Resource (grow only)", responses={412: PROBLEM_RESPONSES[412]})
async def scale_storage(body: StorageScaleRequest, request: Request, storageId: str = StorageIdPath,
                        if_match: str | None = IF_MATCH,
                        principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).scale(principal, storageId, body.sizeOfStorage, if_match)
    return document_response(request, row, _storage_document(request, row.body))


@router.post("/storages/{storageId}/migrate", dependencies=WRITE, response_model=VirtualStorage,
             summary="Migrate Virtualised Storage Resource (to another pool)", responses={412: PROBLEM_RESPONSES[412]})
async def migrate_storage(body: StorageMigrateRequest, request: Request, storageId: str = StorageIdPath,
                          if_match: str | None = IF_MATCH,
                          principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).migrate(principal, storageId, body, if_match)
    return document_response(request, row, _storage_document(request, row.body))


@router.post("/terminate", dependencies=WRITE, response_model=StorageTerminateResult,
             summary="Terminate Virtualised Storage Resources (several, best effort)")
async def terminate_storages(body: StorageTerminateRequest, request: Request,
                             principal: Principal = Depends(current_principal)) -> Response:
    done = await _service(request).terminate(principal, body.storageId)
    return Response(dumps({"storageId": done}), media_type="application/json")


@router.post("/affinity_groups", status_code=201, dependencies=WRITE, response_model=StorageAffinityGroup,
             summary="Create Storage Resource Affinity Or Anti-Affinity Constraints Group", responses=CREATED)
async def create_affinity_group(body: StorageAffinityGroupCreate, request: Request,
                                principal: Principal = Depends(current_principal)) -> Response:
    row = await run_in_threadpool(_service(request).create_group, principal, body)
    document = _group_document(request, row.body)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get("/affinity_groups", dependencies=READ, response_model=list[StorageAffinityGroup],
            summary="Query Storage Resource Affinity Or Anti-Affinity Constraints Groups")
async def list_affinity_groups(request: Request, params: ListParams = Depends(list_params),
                               principal: Principal = Depends(current_principal)) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, AFFINITY_GROUP_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.storage.list_groups, principal, listing.page, listing.where)
    return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                         decorate=lambda body: _group_document(request, body))


@router.get("/affinity_groups/{groupId}", dependencies=READ, response_model=StorageAffinityGroup,
            summary="Query one Storage Resource Affinity Or Anti-Affinity Constraints Group")
async def get_affinity_group(request: Request, groupId: str = GroupIdPath,
                             principal: Principal = Depends(current_principal)) -> Response:
    row = await run_in_threadpool(_service(request).get_group, principal, groupId)
    return document_response(request, row, _group_document(request, row.body))


@router.delete("/affinity_groups/{groupId}", status_code=204, dependencies=WRITE,
               summary="Delete Storage Resource Affinity Or Anti-Affinity Constraints Group",
               responses={412: PROBLEM_RESPONSES[412]})
async def delete_affinity_group(request: Request, groupId: str = GroupIdPath, if_match: str | None = IF_MATCH,
                                principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(_service(request).delete_group, principal, groupId, if_match)
    return Response(status_code=204)

"""``/compute/v1`` computes and compute affinity groups (rest-binding.md §3, docs/compute.md).

Long-running calls answer at once with the resource in its transitional state (``201`` for
Allocate, ``202`` for operate / scale / migrate / DELETE); with ``Prefer: wait=N`` the handler
waits up to N seconds for the background task and answers with the final state (``201``,
``200``, ``204``) and ``Preference-Applied``, or with the task's problem when it failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing, text_page_response
from vimkit.api.prefer import requested_wait
from vimkit.api.problems import PROBLEM_RESPONSES, ApiError
from vimkit.api.resources import document_response, point_read, with_self_link
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.domain.compute import COMPUTE_SCHEMA
from vimkit.domain.compute_ops import AFFINITY_GROUP_SCHEMA
from vimkit.models.compute import (
    ComputeAffinityGroup,
    ComputeAffinityGroupCreate,
    ComputeAllocateRequest,
    ComputeMigrateRequest,
    ComputeOperateRequest,
    ComputeOperateResult,
    ComputeScaleRequest,
    ComputeTerminateRequest,
    ComputeTerminateResult,
    ComputeUpdateRequest,
    VirtualCompute,
)

PREFIX = "/compute/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["compute"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429, 503)},
)
READ = [Depends(require_scope("compute:read"))]
WRITE = [Depends(require_scope("compute:write"))]
ComputeIdPath = Path(description="Identifier of the compute.", max_length=64)
GroupIdPath = Path(description="Identifier of the compute affinity group.", max_length=64)
IF_MATCH = Header(None, alias="If-Match")
CREATED = {201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}}
TASK = {202: {"description": "Accepted: the task runs; the compute is UPDATING."},
        412: PROBLEM_RESPONSES[412]}


def _service(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.services.compute


def _compute_document(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return with_self_link(request, body, _compute_path(body["computeId"]))


def _compute_path(compute_id: str) -> str:
    return f"{PREFIX}/computes/{compute_id}"


async def _finished(request: Request, task: asyncio.Task[Any], *, raise_failure: bool = True) -> bool:
    """Wait for ``task`` as long as ``Prefer: wait`` allows; re-raise its problem if it failed
    (unless the failure is the resource's final state, as for Allocate)."""
    wait = requested_wait(request, request.app.state.services.settings.max_prefer_wait)
    if wait is None or not await _service(request).wait_for(task, wait):
        return False
    if not raise_failure:
        return True
    error = task.exception()
    if isinstance(error, ApiError):
        raise error
    if error is not None:
        raise ApiError(500, "the operation failed unexpectedly")
    return True


def _applied(response: Response) -> Response:
    response.headers["Preference-Applied"] = "wait"
    return response


@router.post("/computes", status_code=201, dependencies=WRITE, response_model=VirtualCompute,
             summary="Allocate Virtualised Compute Resource", responses=CREATED)
async def allocate_compute(body: ComputeAllocateRequest, request: Request,
                           principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row, task = await service.allocate(principal, body)
    # A failed allocation is a final state too: 201 with the FAILED compute and its error, which
    # exists (and must be deleted), rather than a problem a client would retry into a second one.
    finished = await _finished(request, task, raise_failure=False)
    if finished:
        # The compute as its allocation left it; a failed one is read back (its error is in it).
        succeeded = not task.cancelled() and task.exception() is None
        row = task.result() if succeeded else await point_read(request, service.get, principal, row.id)
    document = _compute_document(request, row.body)
    response = document_response(request, row, document, 201, document["_links"]["self"]["href"])
    return _applied(response) if finished else response


@router.get("/computes", dependencies=READ, response_model=list[VirtualCompute],
            summary="Query Virtualised Compute Resource",
            responses={200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}})
async def list_computes(request: Request, params: ListParams = Depends(list_params),
                        principal: Principal = Depends(current_principal)) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, COMPUTE_SCHEMA, services.database.dialect, services.settings.page_size)
    if listing.selector.keeps_everything(frozenset()):  # sent as stored, links appended
        page = await run_in_threadpool(services.compute.list, principal, listing.page, listing.where, True)
        return text_page_response(request, ((row.id, row.body) for row in page.items), page.next_marker,
                                  _compute_path)
    page = await run_in_threadpool(services.compute.list, principal, listing.page, listing.where)
    return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                         decorate=lambda body: _compute_document(request, body))


@router.get("/computes/{computeId}", dependencies=READ, response_model=VirtualCompute,
            summary="Query one Virtualised Compute Resource", responses={304: {"description": "Not modified"}})
async def get_compute(request: Request, computeId: str = ComputeIdPath,
                      principal: Principal = Depends(current_principal)) -> Response:
    row = await point_read(request, _service(request).get, principal, computeId)
    return document_response(request, row, _compute_document(request, row.body))


@router.patch("/computes/{computeId}", dependencies=WRITE, response_model=VirtualCompute,
              summary="Update Virtualised Compute Resource (NICs, disks, metadata)",
              responses={412: PROBLEM_RESPONSES[412]},
              openapi_extra={"requestBody": {"content": {"application/merge-patch+json": {
                  "schema": {"$ref": "#/components/schemas/ComputeUpdateRequest"}}}}})
async def update_compute(body: ComputeUpdateRequest, request: Request, computeId: str = ComputeIdPath,
                         if_match: str | None = IF_MATCH,
                         principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).update(principal, computeId, body, if_match)
    return document_response(request, row, _compute_document(request, row.body))


@router.delete("/computes/{computeId}", status_code=202, dependencies=WRITE, response_model=VirtualCompute,
               summary="Terminate Virtualised Compute Resource",
               responses={204: {"description": "Terminated (within Prefer: wait)"}, 412: PROBLEM_RESPONSES[412]})
async def delete_compute(request: Request, computeId: str = ComputeIdPath, if_match: str | None = IF_MATCH,
                         principal: Principal = Depends(current_principal)) -> Response:
    row, task = await _service(request).delete(principal, computeId, if_match)
    if await _finished(request, task):
        return _applied(Response(status_code=204))
    return document_response(request, row, _compute_document(request, row.body), 202)


async def _task_response(request: Request, principal: Principal, row: Any, task: asyncio.Task[Any],
                         extra: dict[str, Any] | None = None) -> Response:
    finished = await _finished(request, task)
    if finished:
        row = await point_read(request, _service(request).get, principal, row.id)
    document = _compute_document(request, row.body)
    if extra is not None:
        document = {**document, "computeOperationOutputData": extra}
    response = document_response(request, row, document, 200 if finished else 202)
    return _applied(response) if finished else response


@router.post("/computes/{computeId}/operate", status_code=202, dependencies=WRITE,
             response_model=ComputeOperateResult, summary="Operate Virtualised Compute Resource", responses=TASK)
async def operate_compute(body: ComputeOperateRequest, request: Request, computeId: str = ComputeIdPath,
                          if_match: str | None = IF_MATCH,
                          principal: Principal = Depends(current_principal)) -> Response:
    row, task, output = await _service(request).operate(principal, computeId, body, if_match)
    return await _task_response(request, principal, row, task, output)


@router.post("/computes/{computeId}/scale", status_code=202, dependencies=WRITE, response_model=VirtualCompute,
             summary="Scale Virtualised Compute Resource (to another flavour)", responses=TASK)
async def scale_compute(body: ComputeScaleRequest, request: Request, computeId: str = ComputeIdPath,
                        if_match: str | None = IF_MATCH,
                        principal: Principal = Depends(current_principal)) -> Response:
    row, task = await _service(request).scale(principal, computeId, body.computeFlavourId, if_match)
    return await _task_response(request, principal, row, task)


@router.post("/computes/{computeId}/migrate", status_code=202, dependencies=WRITE, response_model=VirtualCompute,
             summary="Migrate Virtualised Compute Resource", responses=TASK)
async def migrate_compute(body: ComputeMigrateRequest, request: Request, computeId: str = ComputeIdPath,
                          if_match: str | None = IF_MATCH,
                          principal: Principal = Depends(current_principal)) -> Response:
    row, task = await _service(request).migrate(principal, computeId, body, if_match)
    return await _task_response(request, principal, row, task)


@router.post("/terminate", dependencies=WRITE, response_model=ComputeTerminateResult,
             summary="Terminate Virtualised Compute Resources (several, best effort)")
async def terminate_computes(body: ComputeTerminateRequest, request: Request,
                             principal: Principal = Depends(current_principal)) -> Response:
    done = await _service(request).terminate(principal, body.computeId)
    return Response(dumps({"computeId": done}), media_type="application/json")


# --------------------------------------------------------------------------- affinity groups


def _group_document(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return with_self_link(request, body, f"{PREFIX}/affinity_groups/{body['groupId']}")


@router.post("/affinity_groups", status_code=201, dependencies=WRITE, response_model=ComputeAffinityGroup,
             summary="Create Compute Resource Affinity Or Anti-Affinity Constraints Group", responses=CREATED)
async def create_affinity_group(body: ComputeAffinityGroupCreate, request: Request,
                                principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await run_in_threadpool(service.create_group, principal, body)
    document = _group_document(request, service.group_document(row))
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get("/affinity_groups", dependencies=READ, response_model=list[ComputeAffinityGroup],
            summary="Query Compute Resource Affinity Or Anti-Affinity Constraints Groups")
async def list_affinity_groups(request: Request, params: ListParams = Depends(list_params),
                               principal: Principal = Depends(current_principal)) -> Response:
    services = request.app.state.services
    service = services.compute
    listing = prepare_listing(params, AFFINITY_GROUP_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(service.list_groups, principal, listing.page, listing.where)
    return page_response(request, (service.group_document(row) for row in page.items), page.next_marker,
                         listing.selector, decorate=lambda body: _group_document(request, body))


@router.get("/affinity_groups/{groupId}", dependencies=READ, response_model=ComputeAffinityGroup,
            summary="Query one Compute Resource Affinity Or Anti-Affinity Constraints Group")
async def get_affinity_group(request: Request, groupId: str = GroupIdPath,
                             principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await point_read(request, service.get_group, principal, groupId)
    return document_response(request, row, _group_document(request, service.group_document(row)))


@router.delete("/affinity_groups/{groupId}", status_code=204, dependencies=WRITE,
               summary="Delete Compute Resource Affinity Or Anti-Affinity Constraints Group",
               responses={412: PROBLEM_RESPONSES[412]})
async def delete_affinity_group(request: Request, groupId: str = GroupIdPath, if_match: str | None = IF_MATCH,
                                principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(_service(request).delete_group, principal, groupId, if_match)
    return Response(status_code=204)

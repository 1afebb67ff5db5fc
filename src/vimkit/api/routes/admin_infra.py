"""Operator API for the infrastructure: hosts, zones and fault injection (rest-binding.md §9)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StringConstraints
from starlette.responses import Response

from vimkit.api.auth import require_scope
from vimkit.api.json import dumps
from vimkit.api.problems import PROBLEM_RESPONSES, ApiError, Cause
from vimkit.api.routing import VimRoute
from vimkit.auth.scopes import ADMIN_SCOPE
from vimkit.models.common import RequestModel
from vimkit.store.models import FaultRow

router = APIRouter(
    prefix="/admin/v1",
    route_class=VimRoute,
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN_SCOPE))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 412, 413, 422, 429, 503)},
)


class AdminState(str, Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    MAINTENANCE = "MAINTENANCE"


class HostPatch(RequestModel):
    adminState: AdminState = Field(description="MAINTENANCE and DISABLED hosts take no new resources.")


class HostUsageView(BaseModel):
    vcpusTotal: int
    vcpusUsed: int
    memoryMbTotal: int
    memoryMbUsed: int
    diskGbTotal: int
    diskGbUsed: int
    resources: int


class HostView(BaseModel):
    hostId: str
    zoneId: str
    adminState: str
    operationalState: str = Field(description="DISABLED while the host is down.")
    schedulable: bool
    usage: HostUsageView
    model_config = {"extra": "allow"}


class ZoneView(BaseModel):
    zoneId: str
    zoneName: str
    nfviPopId: str
    zoneState: str
    zoneProperty: list[str] = []
    metadata: dict[str, str] = {}


class FaultKindName(str, Enum):
    HOST_DOWN = "HOST_DOWN"
    COMPUTE_CRASH = "COMPUTE_CRASH"
    STORAGE_FAILURE = "STORAGE_FAILURE"
    NETWORK_LINK_DOWN = "NETWORK_LINK_DOWN"
    CPU_LOAD = "CPU_LOAD"


class FaultRequest(RequestModel):
    kind: FaultKindName
    targetId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict, description="e.g. {\"load\": 95} for CPU_LOAD.")


class Fault(BaseModel):
    id: str
    kind: str
    targetId: str
    params: dict[str, Any]
    createdAt: datetime


def _fault(row: FaultRow) -> dict[str, Any]:
    return Fault(id=row.id, kind=row.kind, targetId=row.target_id, params=row.params,
                 createdAt=row.created_at).model_dump(mode="json")


def _host_etag(view: dict[str, Any]) -> str:
    return f'"{view["hostId"]}-{view["adminState"]}"'


@router.get("/hosts", response_model=list[HostView], summary="List the infrastructure hosts")
async def list_hosts(request: Request, zoneId: str | None = Query(None, max_length=64)) -> Response:
    infra = request.app.state.services.infrastructure
    return Response(dumps(infra.hosts(zoneId)), media_type="application/json")


@router.get("/hosts/{hostId}", response_model=HostView, summary="Read a host with its usage")
async def get_host(request: Request, hostId: str = Path(max_length=64)) -> Response:
    view = request.app.state.services.infrastructure.host_view(hostId)
    return Response(dumps(view), media_type="application/json", headers={"ETag": _host_etag(view)})


@router.patch(
    "/hosts/{hostId}",
    response_model=HostView,
    summary="Change a host's admin state (ENABLED, DISABLED, MAINTENANCE)",
    openapi_extra={"requestBody": {"content": {"application/merge-patch+json": {
        "schema": {"$ref": "#/components/schemas/HostPatch"}}}}},
)
async def patch_host(
    request: Request,
    body: HostPatch = Body(...),
    hostId: str = Path(max_length=64),
    if_match: str | None = Header(None, alias="If-Match"),
) -> Response:
    infra = request.app.state.services.infrastructure
    current = infra.host_view(hostId)
    if if_match is not None and if_match.strip() != "*" and _host_etag(current) not in [t.strip() for t in if_match.split(",")]:
        raise ApiError(412, f"If-Match {if_match} does not match the current ETag", cause=Cause.PRECONDITION_FAILED)
    view = await run_in_threadpool(infra.set_admin_state, hostId, body.adminState.value)
    return Response(dumps(view), media_type="application/json", headers={"ETag": _host_etag(view)})


@router.get("/zones", response_model=list[ZoneView], summary="List the resource zones")
async def list_zones(request: Request) -> Response:
    return Response(dumps(request.app.state.services.infrastructure.zone_views()), media_type="application/json")


@router.post("/faults", status_code=201, response_model=Fault, summary="Inject a fault (simulated infrastructure)")
async def inject_fault(request: Request, body: FaultRequest) -> Response:
    infra = request.app.state.services.infrastructure
    row = await infra.inject_fault(body.kind.value, body.targetId, body.params)
    location = f"{str(request.base_url).rstrip('/')}/admin/v1/faults/{row.id}"
    return Response(dumps(_fault(row)), status_code=201, media_type="application/json", headers={"Location": location})


@router.get("/faults", response_model=list[Fault], summary="List the active injected faults")
async def list_faults(request: Request) -> Response:
    rows = await run_in_threadpool(request.app.state.services.infrastructure.faults)
    return Response(dumps([_fault(row) for row in rows]), media_type="application/json")


@router.delete("/faults/{faultId}", status_code=204, summary="Repair an injected fault")
async def repair_fault(request: Request, faultId: str = Path(max_length=64)) -> Response:
    await request.app.state.services.infrastructure.repair_fault(faultId)
    return Response(status_code=204)

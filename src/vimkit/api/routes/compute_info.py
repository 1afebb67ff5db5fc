"""``/compute-info/v1``: consumable compute capacity and resource zones (rest-binding.md §5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.problems import PROBLEM_RESPONSES, ApiError, invalid
from vimkit.api.routes.admin_infra import ZoneView
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.models.compute import VirtualComputeResourceInformation

router = APIRouter(
    prefix="/compute-info/v1",
    route_class=VimRoute,
    tags=["compute-info"],
    dependencies=[Depends(require_scope("compute-info:read"))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 429)},
)


class Amount(BaseModel):
    total: int = Field(description="Allocatable, after allocation ratios.")
    allocated: int
    reserved: int = Field(0, description="Held by reservations (none are taken yet).")
    available: int = Field(description="Free on hosts that take new resources.")
    unavailable: int = Field(description="Free on hosts that are down, disabled or in maintenance.")
    largestAvailable: int = Field(description="The most a single host can still take.")


class ComputeCapacity(BaseModel):
    """CapacityInformation for compute: vCPUs, memory (MB) and local disk (GB)."""

    zoneId: str | None = None
    resourceTypeId: str | None = None
    hosts: int
    schedulableHosts: int
    vcpus: Amount
    memoryMb: Amount
    diskGb: Amount
    availableInstances: int | None = Field(
        None, description="Extension: how many computes of the flavour resourceTypeId fit now."
    )


def _fits(infra, zone_id: str | None, vcpus: int, memory_mb: int, disk_gb: int) -> int:  # type: ignore[no-untyped-def]
    count = 0
    for usage in infra.placement.usage(zone_id):
        if not usage.schedulable:
            continue
        free = (usage.vcpus_total - usage.vcpus_used, usage.memory_mb_total - usage.memory_mb_used,
                usage.disk_gb_total - usage.disk_gb_used)
        per = [free[0] // max(vcpus, 1), free[1] // max(memory_mb, 1)]
        if disk_gb:
            per.append(free[2] // disk_gb)
        count += max(0, min(per))
    return count


@router.get("/capacity", response_model=ComputeCapacity, summary="Query Compute Capacity")
async def capacity(
    request: Request,
    zoneId: str | None = Query(None, max_length=64),
    resourceTypeId: str | None = Query(None, max_length=64, description="A flavour id."),
    principal: Principal = Depends(current_principal),
) -> Response:
    services = request.app.state.services
    infra = services.infrastructure
    view = infra.compute_capacity(zoneId)
    for key in ("vcpus", "memoryMb", "diskGb"):
        view[key]["reserved"] = 0
    view["resourceTypeId"] = resourceTypeId
    if resourceTypeId is not None:
        try:
            flavour = await run_in_threadpool(services.flavours.get, principal, resourceTypeId)
        except ApiError as exc:
            raise invalid("resourceTypeId", f"no flavour '{resourceTypeId}' is visible") from exc
        body = flavour.body
        disk = int(sum(item.get("sizeOfStorage", 0) for item in body.get("storageAttributes", [])
                       if item.get("typeOfStorage") in ("root", "ephemeral")))
        view["availableInstances"] = _fits(infra, zoneId, int(body["virtualCpu"]["numVirtualCpu"]),
                                           int(body["virtualMemory"]["virtualMemSize"]), disk)
    return Response(dumps(view), media_type="application/json")


@router.get("/resource_types", response_model=list[VirtualComputeResourceInformation],
            summary="Query Virtualised Compute Resource Information")
async def resource_types(request: Request, zoneId: str | None = Query(None, max_length=64)) -> Response:
    types = request.app.state.services.compute.resource_types(zoneId)
    return Response(dumps(types), media_type="application/json")


@router.get("/resource_zones", response_model=list[ZoneView], summary="Query Resource Zone")
async def resource_zones(request: Request) -> Response:
    return Response(dumps(request.app.state.services.infrastructure.zone_views()), media_type="application/json")


@router.get("/resource_zones/{zoneId}", response_model=ZoneView, summary="Query one Resource Zone")
async def resource_zone(request: Request, zoneId: str = Path(max_length=64)) -> Response:
    return Response(dumps(request.app.state.services.infrastructure.zone_view(zoneId)), media_type="application/json")

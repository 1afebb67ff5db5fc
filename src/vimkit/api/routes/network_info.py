"""``/network-info/v1``: consumable network resource types and capacity (rest-binding.md §5).

A network resource type is a provider network of the inventory (VirtualNetworkResourceInformation
with its type, MTU, zones and segmentation ranges). Capacity counts free segments per range of
each provider network and free addresses per subnet the caller can see.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.models.network import VirtualNetworkResourceInformation

router = APIRouter(
    prefix="/network-info/v1",
    route_class=VimRoute,
    tags=["network-info"],
    dependencies=[Depends(require_scope("network-info:read"))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 429)},
)


class SegmentRange(BaseModel):
    first: int | None = Field(None, description="None for a flat provider network (one network).")
    last: int | None = None
    total: int
    allocated: int
    available: int


class SegmentCapacity(BaseModel):
    resourceTypeId: str
    networkType: str
    total: int
    allocated: int
    available: int
    ranges: list[SegmentRange]


class AddressCapacity(BaseModel):
    subnetId: str
    networkId: str
    ipVersion: str
    cidr: str
    total: int = Field(description="Addresses in the pool (capped at 2^53).")
    allocated: int = Field(description="Pool addresses held by ports or the gateway.")
    available: int


class NetworkCapacity(BaseModel):
    zoneId: str | None = None
    resourceTypeId: str | None = None
    segments: list[SegmentCapacity]
    addresses: list[AddressCapacity] = Field(description="Subnets the caller can see (at most 1000).")


def _json(body: Any) -> Response:
    return Response(dumps(body), media_type="application/json")


@router.get("/resource_types", response_model=list[VirtualNetworkResourceInformation],
            summary="Query Virtualised Network Resource Information")
async def resource_types(request: Request, zoneId: str | None = Query(None, max_length=64)) -> Response:
    return _json(request.app.state.services.network.resource_types(zoneId))


@router.get("/resource_types/{resourceTypeId}", response_model=VirtualNetworkResourceInformation,
            summary="Query one network resource type")
async def resource_type(request: Request, resourceTypeId: str = Path(max_length=64)) -> Response:
    return _json(request.app.state.services.network.resource_type(resourceTypeId))


@router.get("/capacity", response_model=NetworkCapacity, summary="Query Network Capacity")
async def capacity(
    request: Request,
    zoneId: str | None = Query(None, max_length=64),
    resourceTypeId: str | None = Query(None, max_length=64, description="A provider network id."),
    principal: Principal = Depends(current_principal),
) -> Response:
    service = request.app.state.services.network
    return _json(await run_in_threadpool(service.capacity, principal, zoneId, resourceTypeId))

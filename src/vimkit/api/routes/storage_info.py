"""``/storage-info/v1``: consumable storage types and capacity (rest-binding.md §5).

Both come from the storage placement state, so what they report is what allocation allows now.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from vimkit.api.auth import require_scope
from vimkit.api.json import dumps
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.routing import VimRoute
from vimkit.models.storage import StorageCapacity, VirtualStorageResourceInformation

router = APIRouter(
    prefix="/storage-info/v1",
    route_class=VimRoute,
    tags=["storage-info"],
    dependencies=[Depends(require_scope("storage-info:read"))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 429)},
)
ZONE = Query(None, min_length=1, max_length=64, description="Only what this resource zone offers.")


@router.get("/resource_types", response_model=list[VirtualStorageResourceInformation],
            summary="Query Virtualised Storage Resource Information")
async def resource_types(request: Request, zoneId: str | None = ZONE) -> Response:
    body = request.app.state.services.storage.resource_types(zoneId)
    return Response(dumps(body), media_type="application/json")


@router.get("/capacity", response_model=StorageCapacity, summary="Storage capacity (GB)")
async def capacity(
    request: Request,
    zoneId: str | None = ZONE,
    resourceTypeId: str | None = Query(None, min_length=1, max_length=64,
                                       description="A storageResourceTypeId (a typeOfStorage)."),
) -> Response:
    body = request.app.state.services.storage.capacity(zoneId, resourceTypeId)
    return Response(dumps(body), media_type="application/json")

"""``/faults/v1``: Virtualised Resources Fault Management (rest-binding.md §7)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, point_read
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.domain.alarms import ALARM_SCHEMA
from vimkit.models.alarms import Alarm, AlarmModifications

router = APIRouter(
    prefix="/faults/v1",
    route_class=VimRoute,
    tags=["faults"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 413, 422, 429)},
)
AlarmIdPath = Path(description="Identifier of the alarm.", max_length=64)


@router.get(
    "/alarms",
    dependencies=[Depends(require_scope("faults:read"))],
    response_model=list[Alarm],
    summary="Get Alarm List",
    description="Active and (for the retention period) cleared alarms; "
    "`filter=(neq,perceivedSeverity,CLEARED)` gives the active ones.",
)
async def list_alarms(
    request: Request, params: ListParams = Depends(list_params), principal: Principal = Depends(current_principal)
) -> Response:
    services = request.app.state.services
    listing = prepare_listing(params, ALARM_SCHEMA, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.alarms.list, principal, listing.page, listing.where)
    return page_response(request, (services.alarms.representation(row) for row in page.items),
                         page.next_marker, listing.selector)


@router.get("/alarms/{alarmId}", dependencies=[Depends(require_scope("faults:read"))], response_model=Alarm,
            summary="Read one alarm")
async def get_alarm(request: Request, alarmId: str = AlarmIdPath, principal: Principal = Depends(current_principal)) -> Response:
    alarms = request.app.state.services.alarms
    row = await point_read(request, alarms.get, principal, alarmId)
    return document_response(request, row, alarms.representation(row))


@router.patch(
    "/alarms/{alarmId}",
    dependencies=[Depends(require_scope("faults:write"))],
    response_model=Alarm,
    summary="Acknowledge an alarm (extension)",
    responses={412: PROBLEM_RESPONSES[412]},
    openapi_extra={"requestBody": {"content": {"application/merge-patch+json": {
        "schema": {"$ref": "#/components/schemas/AlarmModifications"}}}}},
)
async def acknowledge_alarm(
    request: Request,
    body: AlarmModifications = Body(...),
    alarmId: str = AlarmIdPath,
    if_match: str | None = Header(None, alias="If-Match"),
    principal: Principal = Depends(current_principal),
) -> Response:
    alarms = request.app.state.services.alarms
    row = await run_in_threadpool(alarms.acknowledge, principal, alarmId, body.ackState.value, if_match)
    return document_response(request, row, alarms.representation(row))

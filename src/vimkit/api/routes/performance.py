"""``/performance/v1``: Virtualised Resources Performance Management (rest-binding.md §8,
docs/performance.md), and the Prometheus exposition on ``/metrics`` (§9)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.auth.scopes import ADMIN_SCOPE
from vimkit.models.performance import (
    MetricsCatalogueEntry,
    PerformanceReport,
    PerformanceReportSummary,
    PmJob,
    PmJobCreate,
    Threshold,
    ThresholdCreate,
)
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.pm_tables import PmJobRow, PmReportRow, PmThresholdRow

PREFIX = "/performance/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["performance"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429)},
)
READ = [Depends(require_scope("performance:read"))]
WRITE = [Depends(require_scope("performance:write"))]
JobIdPath = Path(description="Identifier of the PM job.", max_length=64)
ReportIdPath = Path(description="Identifier of the performance report.", max_length=64)
ThresholdIdPath = Path(description="Identifier of the threshold.", max_length=64)
CREATED = {201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}}
PAGED = {200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}}

JOB_SCHEMA = FilterSchema.from_model(PmJob, PmJobRow.body, columns={"pmJobId": PmJobRow.id})
THRESHOLD_SCHEMA = FilterSchema.from_model(Threshold, PmThresholdRow.body, columns={"thresholdId": PmThresholdRow.id})
REPORT_SCHEMA = FilterSchema.from_model(PerformanceReportSummary, PmReportRow.body, columns={"reportId": PmReportRow.id})


def _service(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.services.performance


def _page_size(request: Request) -> int:
    return int(request.app.state.services.settings.page_size)


@router.post("/pm_jobs", status_code=201, dependencies=WRITE, response_model=PmJob, summary="Create PM Job",
             responses=CREATED)
async def create_pm_job(body: PmJobCreate, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await run_in_threadpool(service.create_job, principal, body)
    document = service.job_representation(row)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get("/pm_jobs", dependencies=READ, response_model=list[PmJob], summary="Query PM Job", responses=PAGED)
async def list_pm_jobs(request: Request, params: ListParams = Depends(list_params),
                       principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    listing = prepare_listing(params, JOB_SCHEMA, service.database.dialect, _page_size(request))
    page = await run_in_threadpool(service.list_jobs, principal, listing.page, listing.where)
    return page_response(request, (service.job_representation(row) for row in page.items), page.next_marker,
                         listing.selector)


@router.get("/pm_jobs/{pmJobId}", dependencies=READ, response_model=PmJob, summary="Query one PM job",
            responses={304: {"description": "Not modified"}})
async def get_pm_job(request: Request, pmJobId: str = JobIdPath,
                     principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await run_in_threadpool(service.get_job, principal, pmJobId)
    return document_response(request, row, service.job_representation(row))


@router.delete("/pm_jobs/{pmJobId}", status_code=204, dependencies=WRITE, summary="Delete PM Job",
               description="Collection stops at once; the job's reports are deleted with it.")
async def delete_pm_job(request: Request, pmJobId: str = JobIdPath,
                        principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(_service(request).delete_job, principal, pmJobId)
    return Response(status_code=204)


@router.get("/pm_jobs/{pmJobId}/reports", dependencies=READ, response_model=list[PerformanceReportSummary],
            summary="List the reports of a PM job (extension)", responses=PAGED,
            description="Reports still within their retention, oldest first, without their entries.")
async def list_reports(request: Request, pmJobId: str = JobIdPath, params: ListParams = Depends(list_params),
                       principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    listing = prepare_listing(params, REPORT_SCHEMA, service.database.dialect, _page_size(request))
    page = await run_in_threadpool(service.list_reports, principal, pmJobId, listing.page, listing.where)
    return page_response(request, ({**row.body, "_links": service.report_links(row)} for row in page.items),
                         page.next_marker, listing.selector)


@router.get("/pm_jobs/{pmJobId}/reports/{reportId}", dependencies=READ, response_model=PerformanceReport,
            summary="Read a performance report", responses={304: {"description": "Not modified"}})
async def get_report(request: Request, pmJobId: str = JobIdPath, reportId: str = ReportIdPath,
                     principal: Principal = Depends(current_principal)) -> Response:
    row, document = await run_in_threadpool(_service(request).get_report, principal, pmJobId, reportId)
    return document_response(request, row, document)


@router.post("/thresholds", status_code=201, dependencies=WRITE, response_model=Threshold,
             summary="Create Threshold", responses=CREATED)
async def create_threshold(body: ThresholdCreate, request: Request,
                           principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await run_in_threadpool(service.create_threshold, principal, body)
    document = service.threshold_representation(row)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


@router.get("/thresholds", dependencies=READ, response_model=list[Threshold], summary="Query Threshold",
            responses=PAGED)
async def list_thresholds(request: Request, params: ListParams = Depends(list_params),
                          principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    listing = prepare_listing(params, THRESHOLD_SCHEMA, service.database.dialect, _page_size(request))
    page = await run_in_threadpool(service.list_thresholds, principal, listing.page, listing.where)
    return page_response(request, (service.threshold_representation(row) for row in page.items),
                         page.next_marker, listing.selector)


@router.get("/thresholds/{thresholdId}", dependencies=READ, response_model=Threshold,
            summary="Query one threshold", responses={304: {"description": "Not modified"}})
async def get_threshold(request: Request, thresholdId: str = ThresholdIdPath,
                        principal: Principal = Depends(current_principal)) -> Response:
    service = _service(request)
    row = await run_in_threadpool(service.get_threshold, principal, thresholdId)
    return document_response(request, row, service.threshold_representation(row))


@router.delete("/thresholds/{thresholdId}", status_code=204, dependencies=WRITE, summary="Delete Threshold")
async def delete_threshold(request: Request, thresholdId: str = ThresholdIdPath,
                           principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(_service(request).delete_threshold, principal, thresholdId)
    return Response(status_code=204)


@router.get("/metrics_catalogue", dependencies=READ, response_model=list[MetricsCatalogueEntry],
            summary="The measurements offered (extension)")
async def metrics_catalogue(request: Request) -> Response:
    return Response(dumps(_service(request).catalogue()), media_type="application/json")


metrics_router = APIRouter(route_class=VimRoute, tags=["admin"],
                           responses={code: PROBLEM_RESPONSES[code] for code in (401, 403, 405, 406, 429)})


@metrics_router.get(
    "/metrics",
    dependencies=[Depends(require_scope(ADMIN_SCOPE))],
    summary="Prometheus metrics",
    description="The VIM's own metrics and the latest collection period of every object a PM job or "
    "threshold measures, one gauge family per measurement (`vimkit_pm_v_cpu_usage_mean` …) labelled "
    "`object_instance_id`, `sub_object_instance_id` (vNIC port) and `resource_group_id`.",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    own = await run_in_threadpool(generate_latest, REGISTRY)
    measured = await run_in_threadpool(_service(request).exposition)
    return Response(own + measured.encode(), media_type=CONTENT_TYPE_LATEST)

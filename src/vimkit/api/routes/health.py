"""Liveness and readiness probes; unauthenticated."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from vimkit.api.problems import PROBLEM_RESPONSES, ApiError, Cause
from vimkit.api.routing import VimRoute
from vimkit.store.migrate import is_current

router = APIRouter(route_class=VimRoute, tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database is reachable and its schema is current",
    responses={503: PROBLEM_RESPONSES[503]},
)
async def readyz(request: Request) -> Health:
    database = request.app.state.services.database
    try:
        current = await run_in_threadpool(is_current, database)
    except Exception as exc:  # any driver error means "not ready", never a 500
        raise ApiError(503, f"database unreachable: {type(exc).__name__}", cause=Cause.BACKEND_UNAVAILABLE,
                       headers={"Retry-After": "5"}) from exc
    if not current:
        raise ApiError(503, "database migrations are not current", cause=Cause.BACKEND_UNAVAILABLE,
                       headers={"Retry-After": "5"})
    return Health(status="ready")

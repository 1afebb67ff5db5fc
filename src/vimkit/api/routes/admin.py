"""The operator API (``/admin/v1``): consumers and the audit log. Inventory and fault injection
join it later.

Client secrets appear in exactly two responses: the one that creates the consumer and the one
that rotates its secret. They are stored only as an argon2id hash — also when the request carries
an ``Idempotency-Key``: the stored response (what a replay returns) has ``clientSecret: null``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints
from starlette.types import Receive, Scope, Send

from vimkit.api.auth import require_scope
from vimkit.api.json import dumps
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.routing import VimRoute
from vimkit.auth.scopes import ADMIN_SCOPE
from vimkit.domain.consumers import NewConsumer
from vimkit.models.common import Identifier, RequestModel
from vimkit.store.models import AuditRow, ConsumerRow

router = APIRouter(
    prefix="/admin/v1",
    route_class=VimRoute,
    tags=["admin"],
    dependencies=[Depends(require_scope(ADMIN_SCOPE))],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 406, 409, 413, 422, 429)},
)


def _rfc3339_only(value: object) -> object:
    """pydantic would also take a bare number as a Unix time; the documented format is RFC 3339."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an RFC 3339 date-time, e.g. 2026-11-25T10:00:00Z")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339_only)]


class ConsumerCreate(RequestModel):
    consumerName: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    resourceGroupId: Identifier | None = Field(
        None, description="The consumer's resource group; a new group of its own when absent."
    )
    scopes: list[str] = Field(min_length=1, max_length=64)


class Consumer(BaseModel):
    consumerId: str
    consumerName: str
    clientId: str
    resourceGroupId: str
    scopes: list[str]
    createdAt: datetime


class ConsumerWithSecret(Consumer):
    clientSecret: str | None = Field(
        description="Shown only in this response; stored as a hash. null in an idempotent replay "
        "(`Idempotent-Replayed: true`): the secret is kept nowhere, rotate it if the first "
        "response was lost."
    )


def _consumer(row: ConsumerRow) -> Consumer:
    return Consumer(
        consumerId=row.id,
        consumerName=row.consumer_name,
        clientId=row.client_id,
        resourceGroupId=row.resource_group_id,
        scopes=list(row.scopes),
        createdAt=row.created_at,
    )


class SecretOnceResponse(Response):
    """Sends the consumer with its new secret, while ``body`` holds it with ``clientSecret: null``.

    ``body`` and the headers are what the ``Idempotency-Key`` store keeps (see
    :mod:`vimkit.api.routing`), so the secret never reaches the database in clear text and a
    replay does not show it a second time.
    """

    media_type = "application/json"

    def __init__(self, created: NewConsumer, status_code: int, headers: dict[str, str]) -> None:
        document: dict[str, Any] = _consumer(created.row).model_dump(mode="json")
        super().__init__(dumps({**document, "clientSecret": None}), status_code, headers)
        self._sent = dumps({**document, "clientSecret": created.client_secret})
        self.headers["content-length"] = str(len(self._sent))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self._sent})


@router.post("/consumers", status_code=201, response_model=ConsumerWithSecret, summary="Create a consumer")
async def create_consumer(body: ConsumerCreate, request: Request) -> Response:
    consumers = request.app.state.services.consumers
    created = await run_in_threadpool(consumers.create, body.consumerName, body.scopes, body.resourceGroupId)
    headers = {
        "Location": str(request.url_for("get_consumer", consumer_id=created.row.id)),
        "Cache-Control": "no-store",
    }
    return SecretOnceResponse(created, 201, headers)


@router.get("/consumers", response_model=list[Consumer], summary="List consumers")
async def list_consumers(request: Request) -> list[Consumer]:
    rows = await run_in_threadpool(request.app.state.services.consumers.list)
    return [_consumer(row) for row in rows]


@router.get("/consumers/{consumer_id}", response_model=Consumer, summary="Read a consumer")
async def get_consumer(consumer_id: str, request: Request) -> Consumer:
    row = await run_in_threadpool(request.app.state.services.consumers.get, consumer_id)
    return _consumer(row)


@router.delete(
    "/consumers/{consumer_id}",
    status_code=204,
    summary="Delete a consumer; its tokens stop working",
    description="Refused with 409 for the last consumer holding the `admin` scope.",
)
async def delete_consumer(consumer_id: str, request: Request) -> Response:
    await run_in_threadpool(request.app.state.services.consumers.delete, consumer_id)
    return Response(status_code=204)


@router.post(
    "/consumers/{consumer_id}/rotate_secret",
    response_model=ConsumerWithSecret,
    summary="Issue a new client secret; tokens from the old one stop working",
)
async def rotate_secret(consumer_id: str, request: Request) -> Response:
    rotated = await run_in_threadpool(request.app.state.services.consumers.rotate_secret, consumer_id)
    return SecretOnceResponse(rotated, 200, {"Cache-Control": "no-store"})


class AuditRecord(BaseModel):
    """One mutating call: who, what, when, outcome. Request bodies and secrets are never recorded."""

    auditId: int = Field(description="Increasing with the order of recording.")
    time: datetime = Field(description="When the call arrived (UTC).")
    consumerId: str | None = Field(description="The authenticated caller; null when unauthenticated.")
    resourceGroupId: str | None
    clientIp: str | None = Field(description="Peer address of the connection; `local` for the CLI.")
    method: str = Field(description="HTTP method, or `CLI` for an operator command.")
    path: str = Field(description="Request path without query string, or the CLI command.")
    status: int = Field(description="HTTP status of the answer (500 if the call failed unexpectedly).")
    outcome: Literal["SUCCESS", "FAILURE"]
    requestId: str | None = Field(description="The X-Request-Id of the call.")
    durationMs: float | None


def _audit_record(row: AuditRow) -> dict[str, Any]:
    return AuditRecord(
        auditId=row.seq,
        time=row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=UTC),
        consumerId=row.consumer_id,
        resourceGroupId=row.resource_group_id,
        clientIp=row.client_ip,
        method=row.method,
        path=row.path,
        status=row.status,
        outcome="SUCCESS" if row.status < 400 else "FAILURE",
        requestId=row.request_id,
        durationMs=None if row.duration_us is None else row.duration_us / 1000,
    ).model_dump(mode="json")


@router.get(
    "/audit",
    response_model=list[AuditRecord],
    summary="Read the audit log (extension)",
    description="Every POST, PUT, PATCH and DELETE (including refused ones and the token endpoint) "
    "and every `vimkit consumers`/`vimkit keys` command, oldest first, paged like every collection.",
    responses={200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}},
)
async def list_audit(
    request: Request,
    consumerId: str | None = Query(None, max_length=64, description="Only calls by this consumer."),
    since: Rfc3339 | None = Query(None, description="Only calls at or after this time (RFC 3339)."),
    nextpage_opaque_marker: str | None = Query(None, description="Marker from the previous page's Link header."),
) -> Response:
    services = request.app.state.services
    audit = services.audit
    await run_in_threadpool(audit.flush, 5.0)
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    page = await run_in_threadpool(
        audit.list, services.settings.page_size, nextpage_opaque_marker, consumerId, since
    )
    headers = {}
    if page.next_marker is not None:
        next_url = request.url.include_query_params(nextpage_opaque_marker=page.next_marker)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Response(
        dumps([_audit_record(row) for row in page.items]), media_type="application/json", headers=headers
    )

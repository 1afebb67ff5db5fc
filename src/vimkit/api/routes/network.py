"""``/network/v1``: Virtualised Network Resources Management (rest-binding.md §4).

IFA's single Allocate / Query / Update / Terminate Virtualised Network Resource is bound to three
collections (``/networks``, ``/subnets``, ``/ports``) plus the batch ``POST /terminate``. The
driver call is made inside the request: allocation answers 201 with the resource ``ALLOCATED``,
DELETE answers 204 once it is gone (``Prefer: wait`` changes nothing; see docs/network.md).

The three collections and ``/affinity_groups`` have the same shape, so their routes come from one
factory, :func:`_collection`.
"""

# No ``from __future__ import annotations`` here: the factory's endpoints annotate their bodies
# with the collection's model, a local name FastAPI could not resolve from a string.

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, point_read, with_self_link
from vimkit.api.routing import VimRoute
from vimkit.auth.principal import Principal
from vimkit.domain.network import AFFINITY_GROUP_SCHEMA, NETWORK_SCHEMA, PORT_SCHEMA, SUBNET_SCHEMA
from vimkit.models.network import (
    NetworkAffinityGroup,
    NetworkAffinityGroupCreate,
    NetworkSubnet,
    NetworkSubnetData,
    NetworkSubnetUpdate,
    TerminateRequest,
    TerminateResult,
    VirtualNetwork,
    VirtualNetworkData,
    VirtualNetworkPort,
    VirtualNetworkPortData,
    VirtualNetworkPortUpdate,
    VirtualNetworkUpdate,
)
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.network_tables import NetworkAffinityGroupRow, NetworkRow, PortRow, SubnetRow

PREFIX = "/network/v1"
router = APIRouter(
    prefix=PREFIX,
    route_class=VimRoute,
    tags=["network"],
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 401, 403, 404, 405, 406, 409, 413, 422, 429, 503)},
)
READ = [Depends(require_scope("network:read"))]
WRITE = [Depends(require_scope("network:write"))]
CREATED = {201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}}
LISTED = {200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}}
NOT_MODIFIED = {304: {"description": "Not modified (If-None-Match)"}}
PRECONDITION = {412: PROBLEM_RESPONSES[412]}


def _service(request: Request) -> Any:
    return request.app.state.services.network


@dataclass(frozen=True)
class Collection:
    name: str  # path segment
    row: type
    id_member: str  # the identifier's member in the representation
    id_param: str  # the path parameter
    schema: FilterSchema
    document: type[BaseModel]
    singular: str  # for operation ids: create_network, list_networks …
    label: str  # for summaries


def _document(request: Request, collection: Collection, body: dict) -> dict:
    return with_self_link(request, body, f"{PREFIX}/{collection.name}/{body[collection.id_member]}")


def _collection(collection: Collection, create_body: type[BaseModel], create: Callable[..., Awaitable[Any]],
                create_summary: str, list_summary: str, delete_summary: str,
                update_body: type[BaseModel] | None = None, update_summary: str = "") -> None:
    """POST, GET (list and one), PATCH (when ``update_body``) and DELETE of one collection.
    ``create(service, principal, body)`` returns the new row."""
    path = f"/{collection.name}"
    one = f"{path}/{{{collection.id_param}}}"
    singular = collection.singular

    def id_path() -> Any:
        return Path(alias=collection.id_param, description=f"Identifier of the {collection.label}.", max_length=64)

    @router.post(path, status_code=201, dependencies=WRITE, response_model=collection.document,
                 operation_id=f"create_{singular}", summary=create_summary, responses=CREATED)
    async def create_endpoint(body: create_body, request: Request,  # type: ignore[valid-type]
                              principal: Principal = Depends(current_principal)) -> Response:
        row = await create(_service(request), principal, body)
        document = _document(request, collection, row.body)
        return document_response(request, row, document, 201, document["_links"]["self"]["href"])

    @router.get(path, dependencies=READ, response_model=list[collection.document],  # type: ignore[name-defined]
                operation_id=f"list_{collection.name}", summary=list_summary, responses=LISTED)
    async def list_endpoint(request: Request, params: ListParams = Depends(list_params),
                            principal: Principal = Depends(current_principal)) -> Response:
        services = request.app.state.services
        listing = prepare_listing(params, collection.schema, services.database.dialect, services.settings.page_size)
        page = await run_in_threadpool(services.network.list, collection.row, principal, listing.page, listing.where)
        return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                             decorate=lambda body: _document(request, collection, body))

    @router.get(one, dependencies=READ, response_model=collection.document, operation_id=f"get_{singular}",
                summary=f"Query one {collection.label}", responses=NOT_MODIFIED)
    async def get_endpoint(request: Request, resource_id: str = id_path(),
                           principal: Principal = Depends(current_principal)) -> Response:
        row = await point_read(request, _service(request).get, collection.row, principal, resource_id)
        return document_response(request, row, _document(request, collection, row.body))

    if update_body is not None:
        @router.patch(one, dependencies=WRITE, response_model=collection.document, operation_id=f"update_{singular}",
                      summary=update_summary, responses=PRECONDITION)
        async def update_endpoint(body: update_body, request: Request,  # type: ignore[valid-type]
                                  resource_id: str = id_path(), if_match: str | None = Header(None, alias="If-Match"),
                                  principal: Principal = Depends(current_principal)) -> Response:
            patch = body.model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]
            row = await run_in_threadpool(_service(request).update, collection.row, principal, resource_id, patch,
                                          if_match)
            return document_response(request, row, _document(request, collection, row.body))

    @router.delete(one, status_code=204, dependencies=WRITE, operation_id=f"delete_{singular}",
                   summary=delete_summary, responses=PRECONDITION)
    async def delete_endpoint(request: Request, resource_id: str = id_path(),
                              if_match: str | None = Header(None, alias="If-Match"),
                              principal: Principal = Depends(current_principal)) -> Response:
        service = _service(request)
        if collection.row is NetworkAffinityGroupRow:
            await run_in_threadpool(service.delete_group, principal, resource_id, if_match)
        else:
            await service.delete(collection.row, principal, resource_id, if_match)
        return Response(status_code=204)


NETWORKS = Collection("networks", NetworkRow, "networkResourceId", "networkId", NETWORK_SCHEMA, VirtualNetwork,
                      "network", "network")
SUBNETS = Collection("subnets", SubnetRow, "resourceId", "subnetId", SUBNET_SCHEMA, NetworkSubnet, "subnet", "subnet")
PORTS = Collection("ports", PortRow, "resourceId", "portId", PORT_SCHEMA, VirtualNetworkPort, "port", "network port")
GROUPS = Collection("affinity_groups", NetworkAffinityGroupRow, "groupId", "groupId", AFFINITY_GROUP_SCHEMA,
                    NetworkAffinityGroup, "affinity_group", "network affinity group")

for _collection_, _body, _update, _create in (
    (NETWORKS, VirtualNetworkData, VirtualNetworkUpdate, lambda s, p, b: s.create_network(p, b)),
    (SUBNETS, NetworkSubnetData, NetworkSubnetUpdate, lambda s, p, b: s.create_subnet(p, b)),
    (PORTS, VirtualNetworkPortData, VirtualNetworkPortUpdate, lambda s, p, b: s.create_port(p, b)),
):
    _collection(
        _collection_, _body, _create,
        create_summary=f"Allocate Virtualised Network Resource ({_collection_.label})",
        list_summary=f"Query Virtualised Network Resource ({_collection_.name})",
        delete_summary=f"Terminate Virtualised Network Resource ({_collection_.label})",
        update_body=_update, update_summary=f"Update Virtualised Network Resource ({_collection_.label})",
    )


async def _create_group(service: Any, principal: Principal, body: NetworkAffinityGroupCreate) -> Any:
    return await run_in_threadpool(service.create_group, principal, body)


_collection(
    GROUPS, NetworkAffinityGroupCreate, _create_group,
    create_summary="Create Network Resource Affinity Or Anti-Affinity Constraints Group",
    list_summary="Query Network Resource Affinity Or Anti-Affinity Constraints Groups",
    delete_summary="Delete Network Resource Affinity Or Anti-Affinity Constraints Group",
)


@router.post("/terminate", dependencies=WRITE, response_model=TerminateResult,
             summary="Terminate Virtualised Network Resources (several, best effort)")
async def terminate(body: TerminateRequest, request: Request,
                    principal: Principal = Depends(current_principal)) -> Response:
    terminated = await _service(request).terminate(principal, body.networkResourceId)
    return Response(dumps({"networkResourceId": terminated}), media_type="application/json")

"""``/network/v1``: Virtualised Network Resources Management (rest-binding.md §4).

IFA's single Allocate / Query / Update / Terminate Virtualised Network Resource is bound to three
collections (``/networks``, ``/subnets``, ``/ports``) plus the batch ``POST /terminate``. The
driver call is made inside the request: allocation answers 201 with the resource ``ALLOCATED``,
DELETE answers 204 once it is gone (``Prefer: wait`` changes nothing; see docs/network.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from vimkit.api.auth import current_principal, require_scope
from vimkit.api.json import dumps
from vimkit.api.listing import ListParams, list_params, page_response, prepare_listing
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.resources import document_response, with_self_link
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


def _id_path():  # type: ignore[no-untyped-def]
    # A fresh Path per parameter: FastAPI records the parameter's name on the object.
    return Path(description="Identifier of the network resource.", max_length=64)


CREATED = {201: {"headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}}}
LISTED = {200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next page"}}}}

# collection name → (row model, id member, filter schema)
KINDS: dict[str, tuple[type, str, Any]] = {
    "networks": (NetworkRow, "networkResourceId", NETWORK_SCHEMA),
    "subnets": (SubnetRow, "resourceId", SUBNET_SCHEMA),
    "ports": (PortRow, "resourceId", PORT_SCHEMA),
    "affinity_groups": (NetworkAffinityGroupRow, "groupId", AFFINITY_GROUP_SCHEMA),
}


def _service(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.services.network


def _document(request: Request, collection: str, body: dict) -> dict:
    id_member = KINDS[collection][1]
    return with_self_link(request, body, f"{PREFIX}/{collection}/{body[id_member]}")


def _created(request: Request, collection: str, row: Any) -> Response:
    document = _document(request, collection, row.body)
    return document_response(request, row, document, 201, document["_links"]["self"]["href"])


async def _list(request: Request, collection: str, params: ListParams, principal: Principal) -> Response:
    model, _, schema = KINDS[collection]
    services = request.app.state.services
    listing = prepare_listing(params, schema, services.database.dialect, services.settings.page_size)
    page = await run_in_threadpool(services.network.list, model, principal, listing.page, listing.where)
    return page_response(request, (row.body for row in page.items), page.next_marker, listing.selector,
                         decorate=lambda body: _document(request, collection, body))


async def _get(request: Request, collection: str, resource_id: str, principal: Principal) -> Response:
    model = KINDS[collection][0]
    row = await run_in_threadpool(_service(request).get, model, principal, resource_id)
    return document_response(request, row, _document(request, collection, row.body))


async def _patch(request: Request, collection: str, resource_id: str, patch: dict, if_match: str | None,
                 principal: Principal) -> Response:
    model = KINDS[collection][0]
    row = await run_in_threadpool(_service(request).update, model, principal, resource_id, patch, if_match)
    return document_response(request, row, _document(request, collection, row.body))


async def _delete(request: Request, collection: str, resource_id: str, if_match: str | None,
                  principal: Principal) -> Response:
    await _service(request).delete(KINDS[collection][0], principal, resource_id, if_match)
    return Response(status_code=204)


# ---------------------------------------------------------------- networks


@router.post("/networks", status_code=201, dependencies=WRITE, response_model=VirtualNetwork,
             summary="Allocate Virtualised Network Resource (network)", responses=CREATED)
async def create_network(body: VirtualNetworkData, request: Request,
                         principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).create_network(principal, body)
    return _created(request, "networks", row)


@router.get("/networks", dependencies=READ, response_model=list[VirtualNetwork],
            summary="Query Virtualised Network Resource (networks)", responses=LISTED)
async def list_networks(request: Request, params: ListParams = Depends(list_params),
                        principal: Principal = Depends(current_principal)) -> Response:
    return await _list(request, "networks", params, principal)


@router.get("/networks/{networkId}", dependencies=READ, response_model=VirtualNetwork,
            summary="Query one network", responses={304: {"description": "Not modified (If-None-Match)"}})
async def get_network(request: Request, networkId: str = _id_path(),
                      principal: Principal = Depends(current_principal)) -> Response:
    return await _get(request, "networks", networkId, principal)


@router.patch("/networks/{networkId}", dependencies=WRITE, response_model=VirtualNetwork,
              summary="Update Virtualised Network Resource (network)", responses={412: PROBLEM_RESPONSES[412]})
async def update_network(body: VirtualNetworkUpdate, request: Request, networkId: str = _id_path(),
                         if_match: str | None = Header(None, alias="If-Match"),
                         principal: Principal = Depends(current_principal)) -> Response:
    return await _patch(request, "networks", networkId, body.model_dump(mode="json", exclude_unset=True),
                        if_match, principal)


@router.delete("/networks/{networkId}", status_code=204, dependencies=WRITE,
               summary="Terminate Virtualised Network Resource (network)", responses={412: PROBLEM_RESPONSES[412]})
async def delete_network(request: Request, networkId: str = _id_path(),
                         if_match: str | None = Header(None, alias="If-Match"),
                         principal: Principal = Depends(current_principal)) -> Response:
    return await _delete(request, "networks", networkId, if_match, principal)


# ---------------------------------------------------------------- subnets


@router.post("/subnets", status_code=201, dependencies=WRITE, response_model=NetworkSubnet,
             summary="Allocate Virtualised Network Resource (subnet)", responses=CREATED)
async def create_subnet(body: NetworkSubnetData, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).create_subnet(principal, body)
    return _created(request, "subnets", row)


@router.get("/subnets", dependencies=READ, response_model=list[NetworkSubnet],
            summary="Query Virtualised Network Resource (subnets)", responses=LISTED)
async def list_subnets(request: Request, params: ListParams = Depends(list_params),
                       principal: Principal = Depends(current_principal)) -> Response:
    return await _list(request, "subnets", params, principal)


@router.get("/subnets/{subnetId}", dependencies=READ, response_model=NetworkSubnet,
            summary="Query one subnet", responses={304: {"description": "Not modified (If-None-Match)"}})
async def get_subnet(request: Request, subnetId: str = _id_path(),
                     principal: Principal = Depends(current_principal)) -> Response:
    return await _get(request, "subnets", subnetId, principal)


@router.patch("/subnets/{subnetId}", dependencies=WRITE, response_model=NetworkSubnet,
              summary="Update Virtualised Network Resource (subnet)", responses={412: PROBLEM_RESPONSES[412]})
async def update_subnet(body: NetworkSubnetUpdate, request: Request, subnetId: str = _id_path(),
                        if_match: str | None = Header(None, alias="If-Match"),
                        principal: Principal = Depends(current_principal)) -> Response:
    return await _patch(request, "subnets", subnetId, body.model_dump(mode="json", exclude_unset=True),
                        if_match, principal)


@router.delete("/subnets/{subnetId}", status_code=204, dependencies=WRITE,
               summary="Terminate Virtualised Network Resource (subnet)", responses={412: PROBLEM_RESPONSES[412]})
async def delete_subnet(request: Request, subnetId: str = _id_path(),
                        if_match: str | None = Header(None, alias="If-Match"),
                        principal: Principal = Depends(current_principal)) -> Response:
    return await _delete(request, "subnets", subnetId, if_match, principal)


# ---------------------------------------------------------------- ports


@router.post("/ports", status_code=201, dependencies=WRITE, response_model=VirtualNetworkPort,
             summary="Allocate Virtualised Network Resource (network port)", responses=CREATED)
async def create_port(body: VirtualNetworkPortData, request: Request,
                      principal: Principal = Depends(current_principal)) -> Response:
    row = await _service(request).create_port(principal, body)
    return _created(request, "ports", row)


@router.get("/ports", dependencies=READ, response_model=list[VirtualNetworkPort],
            summary="Query Virtualised Network Resource (ports)", responses=LISTED)
async def list_ports(request: Request, params: ListParams = Depends(list_params),
                     principal: Principal = Depends(current_principal)) -> Response:
    return await _list(request, "ports", params, principal)


@router.get("/ports/{portId}", dependencies=READ, response_model=VirtualNetworkPort,
            summary="Query one port", responses={304: {"description": "Not modified (If-None-Match)"}})
async def get_port(request: Request, portId: str = _id_path(),
                   principal: Principal = Depends(current_principal)) -> Response:
    return await _get(request, "ports", portId, principal)


@router.patch("/ports/{portId}", dependencies=WRITE, response_model=VirtualNetworkPort,
              summary="Update Virtualised Network Resource (port)", responses={412: PROBLEM_RESPONSES[412]})
async def update_port(body: VirtualNetworkPortUpdate, request: Request, portId: str = _id_path(),
                      if_match: str | None = Header(None, alias="If-Match"),
                      principal: Principal = Depends(current_principal)) -> Response:
    return await _patch(request, "ports", portId, body.model_dump(mode="json", exclude_unset=True),
                        if_match, principal)


@router.delete("/ports/{portId}", status_code=204, dependencies=WRITE,
               summary="Terminate Virtualised Network Resource (port)", responses={412: PROBLEM_RESPONSES[412]})
async def delete_port(request: Request, portId: str = _id_path(),
                      if_match: str | None = Header(None, alias="If-Match"),
                      principal: Principal = Depends(current_principal)) -> Response:
    return await _delete(request, "ports", portId, if_match, principal)


# ---------------------------------------------------------------- batch terminate


@router.post("/terminate", dependencies=WRITE, response_model=TerminateResult,
             summary="Terminate Virtualised Network Resources (several, best effort)")
async def terminate(body: TerminateRequest, request: Request,
                    principal: Principal = Depends(current_principal)) -> Response:
    terminated = await _service(request).terminate(principal, body.networkResourceId)
    return Response(dumps({"networkResourceId": terminated}), media_type="application/json")


# ---------------------------------------------------------------- affinity groups


@router.post("/affinity_groups", status_code=201, dependencies=WRITE, response_model=NetworkAffinityGroup,
             summary="Create Network Resource Affinity Or Anti-Affinity Constraints Group", responses=CREATED)
async def create_affinity_group(body: NetworkAffinityGroupCreate, request: Request,
                                principal: Principal = Depends(current_principal)) -> Response:
    row = await run_in_threadpool(_service(request).create_group, principal, body)
    return _created(request, "affinity_groups", row)


@router.get("/affinity_groups", dependencies=READ, response_model=list[NetworkAffinityGroup],
            summary="Query Network Resource Affinity Or Anti-Affinity Constraints Groups", responses=LISTED)
async def list_affinity_groups(request: Request, params: ListParams = Depends(list_params),
                               principal: Principal = Depends(current_principal)) -> Response:
    return await _list(request, "affinity_groups", params, principal)


@router.get("/affinity_groups/{groupId}", dependencies=READ, response_model=NetworkAffinityGroup,
            summary="Query one network affinity group", responses={304: {"description": "Not modified"}})
async def get_affinity_group(request: Request, groupId: str = _id_path(),
                             principal: Principal = Depends(current_principal)) -> Response:
    return await _get(request, "affinity_groups", groupId, principal)


@router.delete("/affinity_groups/{groupId}", status_code=204, dependencies=WRITE,
               summary="Delete Network Resource Affinity Or Anti-Affinity Constraints Group",
               responses={412: PROBLEM_RESPONSES[412]})
async def delete_affinity_group(request: Request, groupId: str = _id_path(),
                                if_match: str | None = Header(None, alias="If-Match"),
                                principal: Principal = Depends(current_principal)) -> Response:
    await run_in_threadpool(_service(request).delete_group, principal, groupId, if_match)
    return Response(status_code=204)

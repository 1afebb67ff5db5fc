"""Resource-group isolation for every tenant-owned resource type (rest-binding.md §1.6).

Consumer A (group A) owns a resource; consumer B (group B, every non-admin scope) must not be
able to read, list, change, operate, subscribe to or delete it: each attempt answers 404 exactly
as for an id that does not exist, lists never contain it, and A's resource is unchanged after.
A second consumer of group A and the admin do see it.

**Each issue that adds a tenant-owned resource type adds a row to ``RESOURCES``.** A row says how
the owner creates one, where it lives, and which of change / operate / subscribe apply; the
tests are generated for every applicable (resource type, action) pair.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Consumer, RunningServer, assert_problem


@dataclass(frozen=True)
class Call:
    """A request on one resource: ``path`` is appended to the resource's URL (``""`` = itself)."""

    method: str
    path: str = ""
    body: dict | None = None


@dataclass(frozen=True)
class TenantResource:
    name: str
    collection: str  # e.g. /compute/v1/flavours
    id_member: str  # the identifier member of the representation, e.g. flavourId
    create: Callable[[httpx.Client], str]  # as the owner; returns the new resource's id
    changes: tuple[Call, ...] = ()  # PATCH/PUT-like updates
    operations: tuple[Call, ...] = ()  # task POSTs: operate, scale, migrate …
    # (subscriptions collection, body naming the resource) — another group's id must be refused.
    subscribe: tuple[str, Callable[[str], dict]] | None = None
    deletable: bool = True

    def url(self, resource_id: str) -> str:
        return f"{self.collection}/{resource_id}"


def _private_flavour(client: httpx.Client) -> str:
    flavour_id = f"private-{uuid.uuid4().hex[:8]}"
    response = client.post("/compute/v1/flavours", json={
        "flavourId": flavour_id, "isPublic": False,
        "virtualCpu": {"numVirtualCpu": 2}, "virtualMemory": {"virtualMemSize": 2048},
    })
    assert response.status_code == 201, response.text
    return flavour_id


def _volume(client: httpx.Client) -> str:
    response = client.post("/storage/v1/storages", json={
        "storageName": "tenant-volume", "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
    })
    assert response.status_code == 201, response.text
    return response.json()["storageId"]


def _compute(client: httpx.Client) -> str:
    response = client.post("/compute/v1/computes", json={"computeFlavourId": "m1.tiny", "computeName": "tenant-vm"},
                           headers={"Prefer": "wait=20"})
    assert response.status_code == 201 and response.json()["provisioningState"] == "ALLOCATED", response.text
    return response.json()["computeId"]


def _compute_affinity_group(client: httpx.Client) -> str:
    response = client.post("/compute/v1/affinity_groups", json={"groupName": "g", "type": "ANTI_AFFINITY"})
    assert response.status_code == 201, response.text
    return response.json()["groupId"]


def _network(client: httpx.Client) -> str:
    response = client.post("/network/v1/networks", json={"networkResourceName": "tenant-net"})
    assert response.status_code == 201, response.text
    return response.json()["networkResourceId"]


def _subnet(client: httpx.Client) -> str:
    response = client.post("/network/v1/subnets", json={
        "networkId": _network(client), "ipVersion": "IPv4", "cidr": "10.77.0.0/24"})
    assert response.status_code == 201, response.text
    return response.json()["resourceId"]


def _port(client: httpx.Client) -> str:
    response = client.post("/network/v1/ports", json={"networkId": _network(client)})
    assert response.status_code == 201, response.text
    return response.json()["resourceId"]


def _network_affinity_group(client: httpx.Client) -> str:
    response = client.post("/network/v1/affinity_groups", json={"groupName": "g", "type": "AFFINITY"})
    assert response.status_code == 201, response.text
    return response.json()["groupId"]


def _pm_job(client: httpx.Client) -> str:
    response = client.post("/performance/v1/pm_jobs", json={
        "objectType": "VirtualStorage", "objectInstanceIds": [_volume(client)],
        "performanceMetric": ["UsageMeanVStorage"], "collectionPeriod": 5, "reportingPeriod": 10})
    assert response.status_code == 201, response.text
    return response.json()["pmJobId"]


def _threshold(client: httpx.Client) -> str:
    response = client.post("/performance/v1/thresholds", json={
        "objectType": "VirtualStorage", "objectInstanceIds": [_volume(client)], "performanceMetric": "UsagePeakVStorage",
        "thresholdType": "SINGLE_VALUE", "thresholdDetails": {"thresholdValue": 90, "hysteresis": 1}})
    assert response.status_code == 201, response.text
    return response.json()["thresholdId"]


RESOURCES: list[TenantResource] = [
    TenantResource("private compute flavour", "/compute/v1/flavours", "flavourId", _private_flavour),
    TenantResource(
        "volume", "/storage/v1/storages", "storageId", _volume,
        changes=(Call("PATCH", "", {"storageName": "stolen", "metadata": {"k": "v"}}),),
        operations=(
            Call("POST", "/operate", {"storageOperation": "CREATE_SNAPSHOT"}),
            Call("POST", "/scale", {"sizeOfStorage": 2}),
            Call("POST", "/migrate", {}),
        ),
    ),
    TenantResource(
        "compute", "/compute/v1/computes", "computeId", _compute,
        changes=(Call("PATCH", "", {"metadata": {"k": "v"}}),),
        operations=(
            Call("POST", "/operate", {"computeOperation": "STOP"}),
            Call("POST", "/scale", {"computeFlavourId": "m1.small"}),
            Call("POST", "/migrate", {"migrationType": "OFFLINE_MIGRATION"}),
        ),
    ),
    TenantResource("compute affinity group", "/compute/v1/affinity_groups", "groupId", _compute_affinity_group),
    TenantResource("private network", "/network/v1/networks", "networkResourceId", _network,
                   changes=(Call("PATCH", "", {"networkResourceName": "stolen", "metadata": {"k": "v"}}),)),
    TenantResource("subnet", "/network/v1/subnets", "resourceId", _subnet,
                   changes=(Call("PATCH", "", {"isDhcpEnabled": False}),)),
    TenantResource("port", "/network/v1/ports", "resourceId", _port,
                   changes=(Call("PATCH", "", {"bandwidth": 1, "metadata": {"k": "v"}}),)),
    TenantResource("network affinity group", "/network/v1/affinity_groups", "groupId", _network_affinity_group),
    TenantResource("pm job", "/performance/v1/pm_jobs", "pmJobId", _pm_job),
    TenantResource("threshold", "/performance/v1/thresholds", "thresholdId", _threshold),
    # Later issues: computes (changes=PATCH, operations=operate/scale/migrate, subscribe=…),
    # networks, subnets, ports, storages, affinity groups, subscriptions, PM jobs, thresholds …
]

ACTIONS = ("read", "list", "change", "operate", "subscribe", "delete")


def _applies(resource: TenantResource, action: str) -> bool:
    return {
        "change": bool(resource.changes),
        "operate": bool(resource.operations),
        "subscribe": resource.subscribe is not None,
        "delete": resource.deletable,
    }.get(action, True)


CASES = [
    pytest.param(resource, action, id=f"{resource.name}-{action}")
    for resource in RESOURCES
    for action in ACTIONS
    if _applies(resource, action)
]


@dataclass
class Tenants:
    vim: RunningServer
    owner: Consumer
    neighbour: Consumer  # same group as the owner
    other: Consumer  # another group


@pytest.fixture
def tenants(vim: RunningServer) -> Tenants:
    owner = vim.new_consumer("tenant-a")
    neighbour = vim.new_consumer("tenant-a-2", resource_group_id=owner.resource_group_id)
    other = vim.new_consumer("tenant-b")
    assert owner.resource_group_id != other.resource_group_id
    return Tenants(vim, owner, neighbour, other)


def _listed_ids(client: httpx.Client, resource: TenantResource, query: str = "") -> set[str]:
    ids: set[str] = set()
    url = f"{resource.collection}{query}"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        ids.update(item[resource.id_member] for item in response.json())
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else ""
    return ids


def _send(client: httpx.Client, resource: TenantResource, resource_id: str, call: Call) -> httpx.Response:
    kwargs: dict = {}
    if call.body is not None:
        kwargs["json"] = call.body
    if call.method == "PATCH":
        kwargs = {"content": httpx.Request("PATCH", "/", json=call.body or {}).content,
                  "headers": {"Content-Type": "application/merge-patch+json"}}
    return client.request(call.method, resource.url(resource_id) + call.path, **kwargs)


@pytest.mark.parametrize(("resource", "action"), CASES)
def test_another_group_cannot_touch_it(tenants: Tenants, resource: TenantResource, action: str) -> None:
    with tenants.owner.client() as owner, tenants.other.client() as other:
        resource_id = resource.create(owner)
        before = owner.get(resource.url(resource_id))
        assert before.status_code == 200, before.text
        unknown_id = f"no-such-{uuid.uuid4().hex[:8]}"

        if action == "read":
            assert_problem(other.get(resource.url(resource_id)), 404)
            assert other.get(resource.url(resource_id)).json()["detail"].replace(resource_id, "X") == \
                other.get(resource.url(unknown_id)).json()["detail"].replace(unknown_id, "X"), \
                "the answer must not tell another group's resource from a missing one"
            assert other.get(resource.url(resource_id), headers={"If-None-Match": "*"}).status_code == 404
        elif action == "list":
            assert resource_id not in _listed_ids(other, resource)
            assert _listed_ids(other, resource, f"?filter=(eq,{resource.id_member},{resource_id})") == set()
        elif action == "change":
            for call in resource.changes:
                assert_problem(_send(other, resource, resource_id, call), 404)
        elif action == "operate":
            for call in resource.operations:
                assert_problem(_send(other, resource, resource_id, call), 404)
        elif action == "subscribe":
            assert resource.subscribe is not None
            path, body_for = resource.subscribe
            assert_problem(other.post(path, json=body_for(resource_id)), 404)
        elif action == "delete":
            assert_problem(other.delete(resource.url(resource_id)), 404)
            assert_problem(other.delete(resource.url(resource_id), headers={"If-Match": before.headers.get("etag", "*")}), 404)

        after = owner.get(resource.url(resource_id))
        assert after.status_code == 200, f"{action} by another group changed the owner's resource"
        assert after.json() == before.json()
        if "etag" in before.headers:
            assert after.headers["etag"] == before.headers["etag"]


@pytest.mark.parametrize("resource", [pytest.param(r, id=r.name) for r in RESOURCES])
def test_the_owners_group_and_the_admin_see_it(tenants: Tenants, resource: TenantResource) -> None:
    with tenants.owner.client() as owner, tenants.neighbour.client() as neighbour, \
            tenants.vim.client() as admin:
        resource_id = resource.create(owner)
        for client in (owner, neighbour, admin):
            assert client.get(resource.url(resource_id)).status_code == 200
            assert resource_id in _listed_ids(client, resource)

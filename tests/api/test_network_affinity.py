"""Network affinity and anti-affinity: networks placed on provider networks, ports checked against
theirs, by group or by resource list, hard and soft — also under concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, assert_problem, start_server

INVENTORY = """\
[[nfviPops]]
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-a"
zoneName = "Zone A"
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-b"
zoneName = "Zone B"
nfviPopId = "pop-1"

[[hosts]]
hostId = "host-a"
zoneId = "zone-a"
vcpus = 8
memoryMb = 16384
diskGb = 100

[[hosts]]
hostId = "host-b"
zoneId = "zone-b"
vcpus = 8
memoryMb = 16384
diskGb = 100

[[providerNetworks]]
providerNetworkId = "vlan-a"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 199]]
zoneIds = ["zone-a"]

[[providerNetworks]]
providerNetworkId = "vlan-b"
networkType = "vlan"
physicalNetwork = "physnet2"
segmentationRanges = [[100, 199]]
zoneIds = ["zone-b"]

[[providerNetworks]]
providerNetworkId = "vlan-c"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[300, 399]]

[[providerNetworks]]
providerNetworkId = "overlay"
networkType = "vxlan"
segmentationRanges = [[5000, 5999]]
"""

ONE_VLAN = """\
[[nfviPops]]
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-a"
zoneName = "Zone A"
nfviPopId = "pop-1"

[[hosts]]
hostId = "host-a"
zoneId = "zone-a"
vcpus = 8
memoryMb = 16384
diskGb = 100

[[providerNetworks]]
providerNetworkId = "only-vlan"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 999]]
"""


def _server(database_url: str, tmp_path: Path, inventory: str) -> RunningServer:
    path = tmp_path / "inventory.toml"
    path.write_text(inventory)
    return start_server(tmp_path / "data", database_url, inventory_file=path)


@pytest.fixture
def avim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = _server(database_url, tmp_path, INVENTORY)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def one_vlan_vim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = _server(database_url, tmp_path, ONE_VLAN)
    try:
        yield server
    finally:
        server.stop()


def group(api: httpx.Client, kind: str, scope: str = "NFVI_NODE", **extra: str) -> str:
    response = api.post("/network/v1/affinity_groups", json={"groupName": "g", "type": kind, "scope": scope, **extra})
    assert response.status_code == 201, response.text
    return response.json()["groupId"]


def by_group(kind: str, group_id: str) -> dict:
    return {"type": kind, "affinityOrAntiAffinityResourceGroupId": group_id}


def by_list(kind: str, scope: str, *ids: str, **extra: str) -> dict:
    return {"type": kind, "scope": scope, "affinityOrAntiAffinityResourceList": {"resource": list(ids)}, **extra}


def network(api: httpx.Client, *constraints: dict, **body: object) -> httpx.Response:
    return api.post("/network/v1/networks", json={"networkType": "vlan", **body,
                                                  "affinityOrAntiAffinityConstraints": list(constraints)})


def created(response: httpx.Response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def unsatisfiable(response: httpx.Response, name: str = "affinityOrAntiAffinityConstraints/0") -> None:
    assert assert_problem(response, 409, name)["cause"] == "AFFINITY_UNSATISFIABLE"


def test_an_anti_affinity_group_spreads_networks_over_provider_networks(avim: RunningServer) -> None:
    with avim.new_consumer().client() as api:
        spread = group(api, "ANTI_AFFINITY")
        placed = [created(network(api, by_group("ANTI_AFFINITY", spread)))["providerNetwork"] for _ in range(3)]
        assert placed == ["vlan-a", "vlan-b", "vlan-c"]
        unsatisfiable(network(api, by_group("ANTI_AFFINITY", spread)))
        networks = api.get("/network/v1/networks").json()
        assert len(networks) == 3, "nothing half-created"
        assert networks[0]["affinityOrAntiAffinityConstraints"] == [
            {"type": "ANTI_AFFINITY", "scope": "NFVI_NODE", "affinityOrAntiAffinityResourceGroupId": spread,
             "enforcement": "HARD"}]
        # a group with members cannot go; once a member is gone its place is free again
        assert_problem(api.delete(f"/network/v1/affinity_groups/{spread}"), 409)
        assert api.delete(f"/network/v1/networks/{networks[1]['networkResourceId']}").status_code == 204
        assert created(network(api, by_group("ANTI_AFFINITY", spread)))["providerNetwork"] == "vlan-b"
        # an affinity group keeps its networks together
        together = group(api, "AFFINITY")
        first = created(network(api, by_group("AFFINITY", together), providerNetwork="vlan-c"))
        assert created(network(api, by_group("AFFINITY", together)))["providerNetwork"] == "vlan-c"
        unsatisfiable(network(api, by_group("AFFINITY", together), providerNetwork="vlan-a"))
        for item in api.get("/network/v1/networks").json():
            assert api.delete(f"/network/v1/networks/{item['networkResourceId']}").status_code == 204
        assert api.delete(f"/network/v1/affinity_groups/{spread}").status_code == 204
        assert first["providerNetwork"] == "vlan-c"


def test_scopes_resource_lists_and_soft_rules(avim: RunningServer) -> None:
    with avim.new_consumer().client() as api:
        apart = group(api, "ANTI_AFFINITY", "PHYSICAL_NETWORK")
        one = created(network(api, by_group("ANTI_AFFINITY", apart)))
        two = created(network(api, by_group("ANTI_AFFINITY", apart)))
        assert (one["providerNetwork"], two["providerNetwork"]) == ("vlan-a", "vlan-b")
        unsatisfiable(network(api, by_group("ANTI_AFFINITY", apart)))  # vlan-c is physnet1 too
        one_id, two_id = one["networkResourceId"], two["networkResourceId"]

        near = by_list("AFFINITY", "PHYSICAL_NETWORK", one_id)
        assert created(network(api, near, providerNetwork="vlan-c"))["providerNetwork"] == "vlan-c"
        unsatisfiable(network(api, near, providerNetwork="vlan-b"))
        # vxlan networks all run on the one overlay
        assert created(network(api, networkType="vxlan"))["providerNetwork"] == "overlay"
        unsatisfiable(network(api, by_list("AFFINITY", "PHYSICAL_NETWORK", one_id), networkType="vxlan"))

        away_from_b = by_list("ANTI_AFFINITY", "ZONE", two_id)
        assert created(network(api, away_from_b))["providerNetwork"] == "vlan-a"
        unsatisfiable(network(api, away_from_b, providerNetwork="vlan-c"))  # vlan-c reaches zone-b too
        soft = by_list("ANTI_AFFINITY", "NFVI_NODE", one_id, enforcement="SOFT")
        assert created(network(api, soft))["providerNetwork"] == "vlan-b"  # kept where it can be
        assert created(network(api, soft, providerNetwork="vlan-a"))["providerNetwork"] == "vlan-a"
        # unknown or invisible ids constrain nothing
        assert created(network(api, by_list("AFFINITY", "NFVI_NODE", "no-such-network")))

        name = "affinityOrAntiAffinityConstraints/0"
        assert_problem(network(api, by_group("ANTI_AFFINITY", "no-such-group")),
                       400, f"{name}/affinityOrAntiAffinityResourceGroupId")
        assert_problem(network(api, by_group("AFFINITY", apart)), 400, f"{name}/type")
        assert_problem(network(api, {"type": "AFFINITY"}), 400, name)
        assert_problem(network(api, by_list("AFFINITY", "SIDEWAYS", one_id)), 400, f"{name}/scope")
    with avim.new_consumer().client() as stranger:
        assert_problem(network(stranger, by_group("ANTI_AFFINITY", apart)),
                       400, f"{name}/affinityOrAntiAffinityResourceGroupId")
        # another group's network is an unknown id: no constraint, nothing learnt
        assert created(network(stranger, by_list("AFFINITY", "NFVI_NODE", two_id), providerNetwork="vlan-a"))


def test_ports_are_checked_against_their_network(avim: RunningServer) -> None:
    with avim.new_consumer().client() as api:
        nets = {}
        for provider in ("vlan-a", "vlan-b", "vlan-c"):
            net = created(network(api, providerNetwork=provider))
            nets[provider] = net["networkResourceId"]
            created(api.post("/network/v1/subnets", json={"networkId": net["networkResourceId"], "ipVersion": "IPv4",
                                                          "cidr": "10.0.0.0/24"}))
        apart = group(api, "ANTI_AFFINITY", "PHYSICAL_NETWORK")

        def port(provider: str, *constraints: dict) -> httpx.Response:
            return api.post("/network/v1/ports", json={"networkId": nets[provider],
                                                       "affinityOrAntiAffinityConstraints": list(constraints)})

        first = created(port("vlan-a", by_group("ANTI_AFFINITY", apart)))
        assert first["affinityOrAntiAffinityConstraints"][0]["affinityOrAntiAffinityResourceGroupId"] == apart
        unsatisfiable(port("vlan-c", by_group("ANTI_AFFINITY", apart)))  # the same physical network
        created(port("vlan-b", by_group("ANTI_AFFINITY", apart)))
        assert len(api.get("/network/v1/ports").json()) == 2
        created(port("vlan-c", by_list("AFFINITY", "PHYSICAL_NETWORK", first["resourceId"])))
        unsatisfiable(port("vlan-b", by_list("AFFINITY", "ZONE", nets["vlan-a"])))
        # where a port sits on a node is decided when a compute plugs it: refused, not ignored
        name = "affinityOrAntiAffinityConstraints/0"
        assert_problem(port("vlan-a", by_list("ANTI_AFFINITY", "NFVI_NODE", first["resourceId"])), 400, f"{name}/scope")
        on_nodes = group(api, "ANTI_AFFINITY")
        assert_problem(port("vlan-a", by_group("ANTI_AFFINITY", on_nodes)),
                       400, f"{name}/affinityOrAntiAffinityResourceGroupId")
        # a port leaving frees its place in the group
        assert_problem(api.delete(f"/network/v1/affinity_groups/{apart}"), 409)
        assert api.delete(f"/network/v1/ports/{first['resourceId']}").status_code == 204
        created(port("vlan-c", by_group("ANTI_AFFINITY", apart)))


async def _burst(vim: RunningServer, path: str, bodies: list[dict]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {vim.token()}"}
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=vim.base_url, headers=headers, timeout=120, limits=limits) as api:
        return list(await asyncio.gather(*[api.post(path, json=body) for body in bodies]))


def test_concurrent_anti_affine_allocations_never_share_a_place(one_vlan_vim: RunningServer) -> None:
    with one_vlan_vim.client() as api:
        apart = group(api, "ANTI_AFFINITY")
        apart_ports = group(api, "ANTI_AFFINITY", "PHYSICAL_NETWORK")
    body = {"networkType": "vlan", "affinityOrAntiAffinityConstraints": [by_group("ANTI_AFFINITY", apart)]}
    responses = asyncio.run(_burst(one_vlan_vim, "/network/v1/networks", [body] * 30))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 29
    assert {r.json()["cause"] for r in responses if r.status_code == 409} == {"AFFINITY_UNSATISFIABLE"}
    with one_vlan_vim.client() as api:
        assert len(api.get("/network/v1/networks").json()) == 1
        net_id = created(network(api))["networkResourceId"]
        created(api.post("/network/v1/subnets", json={"networkId": net_id, "ipVersion": "IPv4", "cidr": "10.1.0.0/24"}))
    body = {"networkId": net_id, "affinityOrAntiAffinityConstraints": [by_group("ANTI_AFFINITY", apart_ports)]}
    responses = asyncio.run(_burst(one_vlan_vim, "/network/v1/ports", [body] * 30))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 29
    with one_vlan_vim.client() as api:
        assert len(api.get("/network/v1/ports").json()) == 1

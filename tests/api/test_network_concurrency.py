"""Uniqueness under 200 concurrent requests: addresses, MACs and segmentation ids (SQLite and
PostgreSQL), with the database's unique constraints as the last line of defence."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver
from vimkit.store.network_tables import IpAllocationRow, NetworkSegmentRow, PortRow

CONCURRENCY = 200

INVENTORY = """\
[[nfviPops]]
nfviPopId = "pop-1"

[[zones]]
zoneId = "zone-a"
zoneName = "Zone A"
nfviPopId = "pop-1"

[[hosts]]
hostId = "host-1"
zoneId = "zone-a"
vcpus = 8
memoryMb = 16384
diskGb = 100

[[providerNetworks]]
providerNetworkId = "vlan-150"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 199], [300, 349]]
"""


@pytest.fixture
def crowded_vim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY)
    server = start_server(tmp_path / "data", database_url, inventory_file=inventory)
    try:
        yield server
    finally:
        server.stop()


async def _burst(vim: RunningServer, path: str, bodies: list[dict]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {vim.token()}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=vim.base_url, headers=headers, timeout=120, limits=limits) as api:
        return list(await asyncio.gather(*[api.post(path, json=body) for body in bodies]))


def _count(vim: RunningServer, model: type) -> int:
    with vim.services.database.read() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_concurrent_ports_never_share_an_address_or_mac(crowded_vim: RunningServer) -> None:
    with crowded_vim.client() as api:
        net = api.post("/network/v1/networks", json={}).json()
        net_id = net["networkResourceId"]
        # 2 pools of 90 addresses + the IPv6 subnet: 180 IPv4 addresses for 200 requests.
        assert api.post("/network/v1/subnets", json={
            "networkId": net_id, "ipVersion": "IPv4", "cidr": "10.50.0.0/24",
            "addressPool": [{"minAddress": "10.50.0.10", "maxAddress": "10.50.0.99"},
                            {"minAddress": "10.50.0.110", "maxAddress": "10.50.0.199"}]}).status_code == 201
        assert api.post("/network/v1/subnets", json={
            "networkId": net_id, "ipVersion": "IPv6", "cidr": "fd00:50::/64"}).status_code == 201
    responses = asyncio.run(_burst(crowded_vim, "/network/v1/ports", [{"networkId": net_id}] * CONCURRENCY))
    created = [r.json() for r in responses if r.status_code == 201]
    refused = [r.json() for r in responses if r.status_code != 201]
    assert len(created) == 180, [r["detail"] for r in refused[:3]]
    assert {(r["status"], r["cause"]) for r in refused} == {(409, "NO_CAPACITY")}
    v4 = [ip["ipAddress"] for p in created for ip in p["fixedIps"] if "." in ip["ipAddress"]]
    v6 = [ip["ipAddress"] for p in created for ip in p["fixedIps"] if ":" in ip["ipAddress"]]
    assert len(v4) == len(set(v4)) == 180 and len(v6) == len(set(v6)) == 180
    assert len({p["macAddress"] for p in created}) == 180
    # Nothing half-created: the store holds exactly the ports and addresses answered.
    assert _count(crowded_vim, PortRow) == 180
    assert _count(crowded_vim, IpAllocationRow) == 2 * 180 + 2  # + both gateways


def test_concurrent_networks_never_share_a_segment(crowded_vim: RunningServer) -> None:
    responses = asyncio.run(_burst(crowded_vim, "/network/v1/networks", [{"networkType": "vlan"}] * CONCURRENCY))
    created = [r.json() for r in responses if r.status_code == 201]
    refused = [r.json() for r in responses if r.status_code != 201]
    assert len(created) == 150, [r["detail"] for r in refused[:3]]
    assert {(r["status"], r["cause"]) for r in refused} == {(409, "NO_CAPACITY")}
    segments = [int(n["segmentationId"]) for n in created]
    assert len(set(segments)) == 150
    assert set(segments) == set(range(100, 200)) | set(range(300, 350))
    assert _count(crowded_vim, NetworkSegmentRow) == 150
    with crowded_vim.client() as api:
        capacity = api.get("/network-info/v1/capacity").json()["segments"][0]
    assert (capacity["allocated"], capacity["available"]) == (150, 0)


def test_concurrent_requests_for_the_same_segment_give_it_once(crowded_vim: RunningServer) -> None:
    bodies = [{"networkType": "vlan", "segmentationId": 120}] * 50
    responses = asyncio.run(_burst(crowded_vim, "/network/v1/networks", bodies))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 49
    assert {r.json()["cause"] for r in responses if r.status_code == 409} == {"CONFLICT"}


def _network_with_pool(vim: RunningServer, cidr: str, first: str, last: str) -> tuple[str, str]:
    with vim.client() as api:
        net_id = api.post("/network/v1/networks", json={}).json()["networkResourceId"]
        created = api.post("/network/v1/subnets", json={
            "networkId": net_id, "ipVersion": "IPv4", "cidr": cidr,
            "addressPool": [{"minAddress": first, "maxAddress": last}]})
        assert created.status_code == 201, created.text
        return net_id, created.json()["resourceId"]


def test_requests_sharing_a_transaction_get_their_own_answers(crowded_vim: RunningServer) -> None:
    net_id, sub_id = _network_with_pool(crowded_vim, "10.60.0.0/24", "10.60.0.10", "10.60.0.99")
    plain = [{"networkId": net_id}] * 40
    same_mac = [{"networkId": net_id, "macAddress": "02:00:00:00:aa:01"}] * 2
    # The pool's last address: the 41 automatic allocations (taken from the start of the pool) can
    # never reach it first, whatever order a loaded machine processes the burst in.
    same_address = [{"networkId": net_id, "fixedIps": [{"ipAddress": "10.60.0.99"}]}] * 2
    bad_subnet = [{"networkId": net_id, "fixedIps": [{"subnetId": "nope"}]}] * 3
    no_network = [{"networkId": "no-such-network"}] * 2
    bodies = plain + same_mac + same_address + bad_subnet + no_network
    responses = asyncio.run(_burst(crowded_vim, "/network/v1/ports", bodies))
    statuses = [r.status_code for r in responses]
    assert statuses[:40] == [201] * 40, [r.text for r in responses[:40] if r.status_code != 201][:2]
    assert sorted(statuses[40:42]) == sorted(statuses[42:44]) == [201, 409]
    for response in responses[40:44]:
        if response.status_code == 409:
            name = response.json()["invalidParams"][0]["name"]
            assert response.json()["cause"] == "CONFLICT" and name in ("macAddress", "fixedIps/0/ipAddress")
    for response in responses[44:47]:
        assert response.status_code == 400 and response.json()["invalidParams"][0]["name"] == "fixedIps/0/subnetId"
    for response in responses[47:]:
        assert response.status_code == 404 and response.json()["invalidParams"][0]["name"] == "networkId"
    created = [r.json() for r in responses if r.status_code == 201]
    addresses = [p["fixedIps"][0]["ipAddress"] for p in created]
    assert len(set(addresses)) == len(created) == 42 and "10.60.0.99" in addresses
    assert _count(crowded_vim, PortRow) == 42
    with crowded_vim.client() as api:
        capacity = {a["subnetId"]: a for a in api.get("/network-info/v1/capacity").json()["addresses"]}
    assert (capacity[sub_id]["allocated"], capacity[sub_id]["available"]) == (42, 48)


def test_driver_failures_inside_a_shared_transaction_release_only_their_ports(crowded_vim: RunningServer) -> None:
    receiver = Receiver().start()
    try:
        net_id, sub_id = _network_with_pool(crowded_vim, "10.61.0.0/24", "10.61.0.10", "10.61.0.39")
        with crowded_vim.client() as api:
            assert api.post("/network/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
        driver = crowded_vim.services.infrastructure.driver  # type: ignore[attr-defined]
        driver.fail_next("create_port", count=5, code="BACKEND_UNAVAILABLE")
        responses = asyncio.run(_burst(crowded_vim, "/network/v1/ports", [{"networkId": net_id}] * 30))
        assert sorted(r.status_code for r in responses) == [201] * 25 + [503] * 5
        assert {r.json()["cause"] for r in responses if r.status_code == 503} == {"BACKEND_UNAVAILABLE"}
        assert _count(crowded_vim, PortRow) == 25 and _count(crowded_vim, IpAllocationRow) == 25 + 1  # + gateway
        with crowded_vim.client() as api:
            capacity = {a["subnetId"]: a for a in api.get("/network-info/v1/capacity").json()["addresses"]}
            assert (capacity[sub_id]["allocated"], capacity[sub_id]["available"]) == (25, 5)
            # the five released addresses are handed out again: the pool fills up exactly
            more = asyncio.run(_burst(crowded_vim, "/network/v1/ports", [{"networkId": net_id}] * 6))
            assert sorted(r.status_code for r in more) == [201] * 5 + [409]
        notes = receiver.wait_for(35)
        changes = [(n["resourceType"], n["changeType"]) for n in notes]
        assert changes.count(("PORT", "ADDED")) == 30 and changes.count(("PORT", "FAILED")) == 5
        failed = [n["changedResourceData"] for n in notes if n["changeType"] == "FAILED"]
        assert {f["provisioningState"] for f in failed} == {"FAILED"} and {f["error"]["status"] for f in failed} == {503}
    finally:
        receiver.stop()


def test_a_wrong_address_counter_is_recounted(crowded_vim: RunningServer) -> None:
    """pool_used is only a shortcut: were it wrong (rows changed by hand), allocation still finds
    the truth in the allocations and corrects it."""
    from sqlalchemy import update

    from vimkit.store.network_tables import SubnetRow

    net_id, sub_id = _network_with_pool(crowded_vim, "10.62.0.0/24", "10.62.0.10", "10.62.0.12")
    with crowded_vim.client() as api:
        assert all(api.post("/network/v1/ports", json={"networkId": net_id}).status_code == 201 for _ in range(3))
        with crowded_vim.services.database.write() as session:  # type: ignore[attr-defined]
            session.execute(update(SubnetRow).where(SubnetRow.id == sub_id).values(pool_used=0, pool_cursor=1))
        assert assert_problem(api.post("/network/v1/ports", json={"networkId": net_id}), 409)["cause"] == "NO_CAPACITY"
        capacity = {a["subnetId"]: a for a in api.get("/network-info/v1/capacity").json()["addresses"]}
        assert (capacity[sub_id]["allocated"], capacity[sub_id]["available"]) == (3, 0)
        assert _count(crowded_vim, PortRow) == 3


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY)
    first = start_server(tmp_path / "one", database_url, inventory_file=inventory, replica_id="one")
    second = start_server(tmp_path / "two", database_url, inventory_file=inventory, replica_id="two")
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


# Replicas share a database server: PostgreSQL only (database_url is parametrized over both).
@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_two_replicas_allocating_ports_and_anti_affine_networks(replicas: tuple[RunningServer, RunningServer]) -> None:
    """Each process has its own port writer: across processes the subnet and group row locks and
    the unique constraints keep addresses, MACs and anti-affinity right."""
    from vimkit.drivers.base import NetworkSpec, Segmentation, SubnetSpec

    first, second = replicas
    net_id, sub_id = _network_with_pool(first, "10.63.0.0/24", "10.63.0.10", "10.63.0.129")  # 120 addresses
    # Each test replica has its own simulator: the second learns of the network as a shared backend would.
    other = second.services.infrastructure.driver  # type: ignore[attr-defined]
    asyncio.run(other.create_network(NetworkSpec(net_id, "n", Segmentation("vlan", 1, "physnet1"))))
    asyncio.run(other.create_subnet(SubnetSpec(sub_id, net_id, "10.63.0.0/24")))
    with first.client() as api:
        group = api.post("/network/v1/affinity_groups", json={"groupName": "g", "type": "ANTI_AFFINITY"}).json()

    async def both(path: str, bodies: list[dict]) -> list[httpx.Response]:
        halves = await asyncio.gather(_burst(first, path, bodies[::2]), _burst(second, path, bodies[1::2]))
        return [*halves[0], *halves[1]]

    responses = asyncio.run(both("/network/v1/ports", [{"networkId": net_id}] * 140))
    created = [r.json() for r in responses if r.status_code == 201]
    assert len(created) == 120, [r.text for r in responses if r.status_code not in (201, 409)][:3]
    assert {r.json()["cause"] for r in responses if r.status_code != 201} == {"NO_CAPACITY"}
    addresses = [p["fixedIps"][0]["ipAddress"] for p in created]
    assert len(set(addresses)) == 120 and len({p["macAddress"] for p in created}) == 120
    with second.client() as api:
        capacity = {a["subnetId"]: a for a in api.get("/network-info/v1/capacity").json()["addresses"]}
    assert (capacity[sub_id]["allocated"], capacity[sub_id]["available"]) == (120, 0)

    body = {"networkType": "vlan",
            "affinityOrAntiAffinityConstraints": [{"type": "ANTI_AFFINITY",
                                                   "affinityOrAntiAffinityResourceGroupId": group["groupId"]}]}
    responses = asyncio.run(both("/network/v1/networks", [body] * 20))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 19

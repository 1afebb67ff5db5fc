"""Uniqueness under 200 concurrent requests: addresses, MACs and segmentation ids (SQLite and
PostgreSQL), with the database's unique constraints as the last line of defence."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import RunningServer, start_server
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

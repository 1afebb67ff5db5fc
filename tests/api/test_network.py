"""Networks, subnets and ports through the HTTP API (rest-binding.md §4, §5, §6)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver

FAST = {"notify_backoff_base": 0.05, "notify_backoff_cap": 0.3, "notify_poll_interval": 0.1}

SMALL_INVENTORY = """\
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
providerNetworkId = "tiny-vlan"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 101], [200, 200]]
mtu = 1500

[[providerNetworks]]
providerNetworkId = "tiny-vxlan"
networkType = "vxlan"
segmentationRanges = [[5000, 5001]]
mtu = 1450

[[providerNetworks]]
providerNetworkId = "flat-ext"
networkType = "flat"
physicalNetwork = "external"
mtu = 1500
"""


@pytest.fixture
def small_vim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(SMALL_INVENTORY)
    server = start_server(tmp_path / "data", database_url, inventory_file=inventory, **FAST)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


def network(api: httpx.Client, **body: object) -> dict:
    response = api.post("/network/v1/networks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def subnet(api: httpx.Client, network_id: str, cidr: str = "10.0.0.0/24", **body: object) -> dict:
    version = "IPv6" if ":" in cidr else "IPv4"
    response = api.post("/network/v1/subnets", json={"networkId": network_id, "ipVersion": version,
                                                     "cidr": cidr, **body})
    assert response.status_code == 201, response.text
    return response.json()


def port(api: httpx.Client, network_id: str, **body: object) -> dict:
    response = api.post("/network/v1/ports", json={"networkId": network_id, **body})
    assert response.status_code == 201, response.text
    return response.json()


def patch(api: httpx.Client, url: str, body: dict, **headers: str) -> httpx.Response:
    return api.patch(url, content=httpx.Request("PATCH", "/", json=body).content,
                     headers={"Content-Type": "application/merge-patch+json", **headers})


# ------------------------------------------------------------------ lifecycle


def test_network_subnet_port_lifecycle(vim: RunningServer) -> None:
    with vim.new_consumer().client() as api:
        net = network(api, networkResourceName="data", bandwidth=100, networkType="vlan",
                      networkQoS=[{"qosName": "latency", "qosValue": 5}], metadata={"tier": "gold"})
        assert net["provisioningState"] == "ALLOCATED" and net["operationalState"] == "ENABLED"
        assert net["networkType"] == "vlan" and net["providerNetwork"] == "physnet1-vlan"
        assert 100 <= int(net["segmentationId"]) <= 999 and net["mtu"] == 1500
        assert net["isShared"] is False and net["metadata"] == {"tier": "gold"}
        assert net["networkQoS"] == [{"qosName": "latency", "qosValue": 5.0}]
        net_url = f"/network/v1/networks/{net['networkResourceId']}"
        assert net["_links"]["self"]["href"].endswith(net_url)

        v4 = subnet(api, net["networkResourceId"], "10.1.0.0/24", isDhcpEnabled=False)
        assert v4["gatewayIp"] == "10.1.0.1" and v4["isDhcpEnabled"] is False
        assert v4["addressPool"] == [{"minAddress": "10.1.0.1", "maxAddress": "10.1.0.254"}]
        v6 = subnet(api, net["networkResourceId"], "fd00:1::/64", gatewayIp="fd00:1::1",
                    addressPool=[{"minAddress": "fd00:1::10", "maxAddress": "fd00:1::ff"}])
        assert v6["ipVersion"] == "IPv6" and v6["provisioningState"] == "ALLOCATED"
        assert api.get(net_url).json()["subnetId"] == [v4["resourceId"], v6["resourceId"]]

        first = port(api, net["networkResourceId"], bandwidth=10)
        assert first["attachedResourceId"] is None and first["portType"] == "ACCESS"
        assert first["segmentId"] == net["segmentationId"] and first["bandwidth"] == 10
        assert [ip["ipAddress"] for ip in first["fixedIps"]] == ["10.1.0.2", "fd00:1::10"]
        mac = int(first["macAddress"][:2], 16)
        assert mac & 0x02 and not mac & 0x01, "locally administered unicast"
        fixed = port(api, net["networkResourceId"], fixedIps=[{"ipAddress": "10.1.0.50"}],
                     macAddress="02:00:00:00:00:01", portType="TRUNK")
        assert fixed["fixedIps"] == [{"subnetId": v4["resourceId"], "ipAddress": "10.1.0.50"}]
        assert fixed["macAddress"] == "02:00:00:00:00:01"
        none = port(api, net["networkResourceId"], fixedIps=[])
        assert none["fixedIps"] == []

        # Query: one, list, filter, ETag
        one = api.get(f"/network/v1/ports/{first['resourceId']}")
        assert one.status_code == 200 and one.headers["etag"]
        assert api.get(f"/network/v1/ports/{first['resourceId']}",
                       headers={"If-None-Match": one.headers["etag"]}).status_code == 304
        listed = api.get("/network/v1/ports", params={"filter": f"(eq,networkId,{net['networkResourceId']})"})
        assert {p["resourceId"] for p in listed.json()} == {first["resourceId"], fixed["resourceId"],
                                                            none["resourceId"]}
        by_mac = api.get("/network/v1/ports", params={"filter": "(eq,macAddress,02:00:00:00:00:01)"}).json()
        assert [p["resourceId"] for p in by_mac] == [fixed["resourceId"]]
        assert_problem(api.get("/network/v1/networks", params={"filter": "(eq,nope,1)"}), 400, "filter")

        # Update
        stale = one.headers["etag"]
        changed = patch(api, f"/network/v1/ports/{first['resourceId']}", {"bandwidth": 20, "metadata": {"a": "b"}})
        assert changed.status_code == 200, changed.text
        assert changed.json()["bandwidth"] == 20 and changed.json()["metadata"] == {"a": "b"}
        assert_problem(patch(api, f"/network/v1/ports/{first['resourceId']}", {"bandwidth": 30},
                             **{"If-Match": stale}), 412)
        renamed = patch(api, net_url, {"networkResourceName": "data2", "metadata": {"tier": None}})
        assert renamed.json()["networkResourceName"] == "data2" and renamed.json()["metadata"] == {}
        assert_problem(patch(api, net_url, {"segmentationId": 5}), 400)

        # Deletion order is enforced
        assert_problem(api.delete(net_url), 409)
        assert_problem(api.delete(f"/network/v1/subnets/{v4['resourceId']}"), 409)
        for item in (first, fixed, none):
            assert api.delete(f"/network/v1/ports/{item['resourceId']}").status_code == 204
        assert_problem(api.get(f"/network/v1/ports/{first['resourceId']}"), 404)
        assert_problem(api.delete(net_url), 409)  # subnets remain
        assert api.delete(f"/network/v1/subnets/{v4['resourceId']}").status_code == 204
        assert api.get(net_url).json()["subnetId"] == [v6["resourceId"]]
        assert api.delete(f"/network/v1/subnets/{v6['resourceId']}").status_code == 204
        assert api.delete(net_url).status_code == 204
        assert_problem(api.get(net_url), 404)
        assert_problem(api.delete(net_url), 404)


def test_batch_terminate_removes_a_topology(vim: RunningServer) -> None:
    with vim.new_consumer().client() as api:
        net = network(api)
        sub = subnet(api, net["networkResourceId"])
        ports = [port(api, net["networkResourceId"]) for _ in range(3)]
        ids = [net["networkResourceId"], sub["resourceId"], *[p["resourceId"] for p in ports], "no-such-id"]
        response = api.post("/network/v1/terminate", json={"networkResourceId": ids})
        assert response.status_code == 200, response.text
        assert sorted(response.json()["networkResourceId"]) == sorted(ids[:-1])
        assert api.get("/network/v1/networks").json() == []
        assert api.get("/network/v1/ports").json() == []


# ------------------------------------------------------------------ segmentation


def test_segmentation_requested_checked_and_exhausted(small_vim: RunningServer) -> None:
    with small_vim.client() as api:
        chosen = network(api, networkType="vlan", segmentationId=200)
        assert chosen["segmentationId"] == "200" and chosen["providerNetwork"] == "tiny-vlan"
        assert_problem(api.post("/network/v1/networks", json={"networkType": "vlan", "segmentationId": 200}), 409,
                       "segmentationId")
        assert_problem(api.post("/network/v1/networks", json={"networkType": "vlan", "segmentationId": 4000}),
                       400, "segmentationId")
        assert_problem(api.post("/network/v1/networks", json={"networkType": "flat", "segmentationId": 7}),
                       400, "segmentationId")
        assert_problem(api.post("/network/v1/networks", json={"providerNetwork": "nope"}), 400, "providerNetwork")
        assert_problem(api.post("/network/v1/networks", json={"networkType": "vlan", "segmentationId": "1x"}),
                       400, "segmentationId")
        assert_problem(api.post("/network/v1/networks", json={"bandwidth": "10"}), 400, "bandwidth")
        others = {network(api, networkType="vlan")["segmentationId"] for _ in range(2)}
        assert others == {"100", "101"}
        body = assert_problem(api.post("/network/v1/networks", json={"networkType": "vlan"}), 409)
        assert body["cause"] == "NO_CAPACITY"
        flat = network(api, networkType="flat")
        assert flat["segmentationId"] is None and flat["providerNetwork"] == "flat-ext"
        assert assert_problem(api.post("/network/v1/networks", json={"networkType": "flat"}), 409)["cause"] == \
            "NO_CAPACITY"
        capacity = api.get("/network-info/v1/capacity", params={"resourceTypeId": "tiny-vlan"}).json()
        assert capacity["segments"][0]["available"] == 0 and capacity["segments"][0]["allocated"] == 3
        # Nothing half-created: exactly the four successful networks exist.
        assert len(api.get("/network/v1/networks").json()) == 4
        assert api.delete(f"/network/v1/networks/{chosen['networkResourceId']}").status_code == 204
        assert network(api, networkType="vlan")["segmentationId"] == "200"


def test_only_admins_create_shared_networks_which_everyone_sees(vim: RunningServer) -> None:
    tenant = vim.new_consumer()
    other = vim.new_consumer()
    with tenant.client() as api, other.client() as neighbour, vim.client() as admin:
        refused = assert_problem(api.post("/network/v1/networks", json={"isShared": True}), 403)
        assert refused["cause"] == "FORBIDDEN"
        shared = network(admin, isShared=True, networkResourceName="public")
        sub = subnet(admin, shared["networkResourceId"], "192.168.50.0/24")
        private = network(api)
        assert shared["networkResourceId"] in {n["networkResourceId"] for n in neighbour.get("/network/v1/networks").json()}
        assert private["networkResourceId"] not in {n["networkResourceId"] for n in neighbour.get("/network/v1/networks").json()}
        # Another group may attach ports to the shared network, not to the private one.
        mine = port(neighbour, shared["networkResourceId"])
        assert mine["fixedIps"][0]["subnetId"] == sub["resourceId"]
        assert_problem(neighbour.post("/network/v1/ports", json={"networkId": private["networkResourceId"]}), 404,
                       "networkId")
        assert_problem(neighbour.post("/network/v1/subnets", json={
            "networkId": private["networkResourceId"], "ipVersion": "IPv4", "cidr": "10.9.0.0/24"}), 404, "networkId")
        # ... but may not change or delete the shared network itself
        assert_problem(patch(neighbour, f"/network/v1/networks/{shared['networkResourceId']}",
                             {"networkResourceName": "mine"}), 403)
        assert_problem(neighbour.delete(f"/network/v1/networks/{shared['networkResourceId']}"), 403)
        assert_problem(patch(api, f"/network/v1/networks/{private['networkResourceId']}", {"isShared": True}), 403)
        assert_problem(api.get(f"/network/v1/ports/{mine['resourceId']}"), 404)


# ------------------------------------------------------------------ subnets and addresses


def test_subnet_validation_names_the_field(vim: RunningServer) -> None:
    with vim.new_consumer().client() as api:
        net_id = network(api)["networkResourceId"]
        subnet(api, net_id, "10.0.0.0/16")

        def bad(field: str, **body: object) -> None:
            payload = {"networkId": net_id, "ipVersion": "IPv4", "cidr": "10.1.0.0/24", **body}
            assert_problem(api.post("/network/v1/subnets", json=payload), 400, field)

        bad("cidr", cidr="10.0.128.0/24")  # overlaps 10.0.0.0/16 on the same network
        bad("cidr", cidr="10.1.0.1/24")  # host bits
        bad("cidr", cidr="fd00::/64")  # IPv6 with ipVersion IPv4
        bad("cidr", cidr="10.1.0.0/31")
        bad("cidr", cidr="nonsense")
        bad("gatewayIp", gatewayIp="10.2.0.1")
        bad("gatewayIp", gatewayIp="10.1.0.255")
        bad("gatewayIp", gatewayIp="fd00::1")
        bad("addressPool/0/minAddress", addressPool=[{"minAddress": "10.9.0.1", "maxAddress": "10.1.0.9"}])
        bad("addressPool/0/maxAddress", addressPool=[{"minAddress": "10.1.0.9", "maxAddress": "10.1.0.3"}])
        bad("addressPool/1", addressPool=[{"minAddress": "10.1.0.2", "maxAddress": "10.1.0.9"},
                                          {"minAddress": "10.1.0.5", "maxAddress": "10.1.0.20"}])
        bad("isDhcpEnabled", isDhcpEnabled="yes")
        bad("ipVersion", ipVersion="IPv5")
        # the same CIDR on another network is fine
        other = network(api)["networkResourceId"]
        subnet(api, other, "10.0.0.0/16")
        assert_problem(api.post("/network/v1/subnets", json={"networkId": "no-such", "ipVersion": "IPv4",
                                                            "cidr": "10.1.0.0/24"}), 404, "networkId")


def test_port_addresses_are_checked_and_exhaust_to_no_capacity(vim: RunningServer) -> None:
    with vim.new_consumer().client() as api:
        net_id = network(api)["networkResourceId"]
        v4 = subnet(api, net_id, "10.3.0.0/28", addressPool=[{"minAddress": "10.3.0.2", "maxAddress": "10.3.0.4"}])
        v6 = subnet(api, net_id, "fd00:3::/64")
        sub_id = v4["resourceId"]

        def bad_port(field: str, fixed: list[dict]) -> None:
            assert_problem(api.post("/network/v1/ports", json={"networkId": net_id, "fixedIps": fixed}), 400, field)

        bad_port("fixedIps/0/ipAddress", [{"subnetId": sub_id, "ipAddress": "10.3.0.9"}])  # outside the pool
        bad_port("fixedIps/0/ipAddress", [{"subnetId": sub_id, "ipAddress": "fd00:3::5"}])  # IPv6 on IPv4
        bad_port("fixedIps/0/ipAddress", [{"ipAddress": "172.16.0.1"}])
        bad_port("fixedIps/0/ipAddress", [{"ipAddress": "not-an-ip"}])
        bad_port("fixedIps/0/subnetId", [{"subnetId": "other"}])
        bad_port("fixedIps/0", [{}])
        assert_problem(api.post("/network/v1/ports", json={"networkId": net_id, "segmentId": "12"}), 400, "segmentId")
        assert_problem(api.post("/network/v1/ports", json={"networkId": net_id, "macAddress": "01:00:5e:00:00:01"}),
                       400, "macAddress")

        taken = port(api, net_id, fixedIps=[{"ipAddress": "10.3.0.3"}], macAddress="02:aa:00:00:00:01")
        assert_problem(api.post("/network/v1/ports", json={"networkId": net_id,
                                                          "fixedIps": [{"ipAddress": "10.3.0.3"}]}), 409,
                       "fixedIps/0/ipAddress")
        assert_problem(api.post("/network/v1/ports", json={"networkId": net_id, "fixedIps": [],
                                                          "macAddress": "02:AA:00:00:00:01"}), 409, "macAddress")
        pool = [port(api, net_id, fixedIps=[{"subnetId": sub_id}])["fixedIps"][0]["ipAddress"] for _ in range(2)]
        assert sorted([*pool, "10.3.0.3"]) == ["10.3.0.2", "10.3.0.3", "10.3.0.4"]
        before = len(api.get("/network/v1/ports").json())
        exhausted = assert_problem(api.post("/network/v1/ports", json={"networkId": net_id}), 409)
        assert exhausted["cause"] == "NO_CAPACITY"
        assert len(api.get("/network/v1/ports").json()) == before, "nothing half-created"
        capacity = api.get("/network-info/v1/capacity").json()
        by_subnet = {a["subnetId"]: a for a in capacity["addresses"]}
        assert by_subnet[sub_id] == {"subnetId": sub_id, "networkId": net_id, "ipVersion": "IPv4",
                                     "cidr": "10.3.0.0/28", "total": 3, "allocated": 3, "available": 0}
        assert by_subnet[v6["resourceId"]]["allocated"] == 1  # the gateway
        # the IPv6 subnet still has room
        only_v6 = port(api, net_id, fixedIps=[{"subnetId": v6["resourceId"]}])
        assert ipaddress.ip_address(only_v6["fixedIps"][0]["ipAddress"]) in ipaddress.ip_network("fd00:3::/64")
        # freeing an address makes it available again
        assert api.delete(f"/network/v1/ports/{taken['resourceId']}").status_code == 204
        again = port(api, net_id, fixedIps=[{"subnetId": sub_id}])
        assert again["fixedIps"][0]["ipAddress"] == "10.3.0.3"


def test_driver_failure_leaves_nothing_and_announces_failed(small_vim: RunningServer, receiver: Receiver) -> None:
    driver = small_vim.services.infrastructure.driver  # type: ignore[attr-defined]
    with small_vim.client() as api:
        response = api.post("/network/v1/subscriptions", json={"callbackUri": receiver.url})
        assert response.status_code == 201, response.text
        driver.fail_next("create_network", message="switch is on fire")
        failed = api.post("/network/v1/networks", json={"networkType": "vxlan", "segmentationId": 5000})
        body = assert_problem(failed, 500)
        assert "switch is on fire" in body["detail"]
        assert api.get("/network/v1/networks").json() == []
        # the segment was released
        assert network(api, networkType="vxlan", segmentationId=5000)["segmentationId"] == "5000"
        net_id = api.get("/network/v1/networks").json()[0]["networkResourceId"]
        subnet(api, net_id, "10.8.0.0/29")
        driver.fail_next("create_port", code="NO_CAPACITY")
        assert assert_problem(api.post("/network/v1/ports", json={"networkId": net_id}), 409)["cause"] == "NO_CAPACITY"
        assert api.get("/network/v1/ports").json() == []
        assert port(api, net_id)["fixedIps"][0]["ipAddress"] == "10.8.0.2"  # the address was released
    received = receiver.wait_for(5)
    assert [(n["resourceType"], n["changeType"]) for n in received] == [
        ("NETWORK", "FAILED"), ("NETWORK", "ADDED"), ("SUBNET", "ADDED"), ("PORT", "FAILED"), ("PORT", "ADDED")]
    assert received[0]["changedResourceData"]["provisioningState"] == "FAILED"
    assert received[0]["changedResourceData"]["error"]["status"] == 500


# ------------------------------------------------------------------ notifications and information


def test_changes_are_notified_to_a_real_receiver(small_vim: RunningServer, receiver: Receiver) -> None:
    info = Receiver().start()
    try:
        with small_vim.client() as api:
            assert api.post("/network/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            assert api.post("/network-info/v1/subscriptions", json={"callbackUri": info.url}).status_code == 201
            net = network(api, metadata={"app": "x"})
            sub = subnet(api, net["networkResourceId"], "10.4.0.0/24")
            prt = port(api, net["networkResourceId"])
            assert patch(api, f"/network/v1/ports/{prt['resourceId']}", {"bandwidth": 5}).status_code == 200
            for path in (f"ports/{prt['resourceId']}", f"subnets/{sub['resourceId']}",
                         f"networks/{net['networkResourceId']}"):
                assert api.delete(f"/network/v1/{path}").status_code == 204
        received = receiver.wait_for(7)
        assert [(n["resourceType"], n["changeType"]) for n in received] == [
            ("NETWORK", "ADDED"), ("SUBNET", "ADDED"), ("PORT", "ADDED"), ("PORT", "MODIFIED"),
            ("PORT", "REMOVED"), ("SUBNET", "REMOVED"), ("NETWORK", "REMOVED")]
        assert [n["sequence"] for n in received] == list(range(1, 8))
        first = received[0]
        assert first["notificationType"] == "VirtualisedResourceChangeNotification"
        assert first["virtualisedResourceId"] == net["networkResourceId"] and first["vimId"] == "vimkit"
        assert first["changedResourceData"]["provisioningState"] == "ALLOCATED"
        assert received[3]["changedResourceData"]["bandwidth"] == 5
        capacity = info.wait_for(2)
        assert [(n["resourceTypeId"], n["changeType"]) for n in capacity] == [("tiny-vxlan", "UPDATE")] * 2
        assert capacity[0]["notificationType"] == "InformationChangeNotification"
        assert capacity[0]["changedResourceData"]["capacity"]["allocated"] == 1
        assert capacity[1]["changedResourceData"]["capacity"]["allocated"] == 0
    finally:
        info.stop()


def test_notifications_respect_resource_groups(small_vim: RunningServer, receiver: Receiver) -> None:
    owner, other = small_vim.new_consumer(), small_vim.new_consumer()
    with owner.client() as mine, other.client() as theirs:
        assert theirs.post("/network/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
        network(mine)
        visible = network(theirs)
    received = receiver.wait_for(1)
    time.sleep(0.4)
    assert [n["virtualisedResourceId"] for n in receiver.notifications] == [visible["networkResourceId"]]
    assert received


def test_resource_types_and_capacity(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.new_consumer().client() as api:
        types = api.get("/network-info/v1/resource_types")
        assert types.status_code == 200, types.text
        by_id = {t["networkResourceTypeId"]: t for t in types.json()}
        assert by_id["physnet1-vlan"]["networkType"] == "vlan" and by_id["physnet1-vlan"]["mtu"] == 1500
        assert by_id["overlay-vxlan"]["segmentationRanges"] == [[10000, 19999]]
        assert api.get("/network-info/v1/resource_types/overlay-vxlan").json()["networkType"] == "vxlan"
        assert_problem(api.get("/network-info/v1/resource_types/nope"), 404)
        assert len(api.get("/network-info/v1/resource_types", params={"zoneId": "zone-a"}).json()) == 2
        assert_problem(api.get("/network-info/v1/resource_types", params={"zoneId": "nowhere"}), 400, "zoneId")
        network(api, networkType="vxlan")
        capacity = api.get("/network-info/v1/capacity", params={"resourceTypeId": "overlay-vxlan"}).json()
        [segments] = capacity["segments"]
        assert segments == {"resourceTypeId": "overlay-vxlan", "networkType": "vxlan", "total": 10000,
                            "allocated": 1, "available": 9999,
                            "ranges": [{"first": 10000, "last": 19999, "total": 10000, "allocated": 1,
                                        "available": 9999}]}
        assert_problem(api.get("/network-info/v1/capacity", params={"resourceTypeId": "nope"}), 400,
                       "resourceTypeId")
        assert_problem(api.get("/network-info/v1/capacity", params={"bogus": "1"}), 400, "bogus")


def test_scopes_and_idempotency(sqlite_vim: RunningServer) -> None:
    consumer = sqlite_vim.new_consumer()
    with consumer.client("network:read") as reader:
        assert_problem(reader.post("/network/v1/networks", json={}), 403)
        assert reader.get("/network/v1/networks").status_code == 200
    with consumer.client() as api:
        key = {"Idempotency-Key": "net-1"}
        first = api.post("/network/v1/networks", json={"networkType": "vlan"}, headers=key)
        again = api.post("/network/v1/networks", json={"networkType": "vlan"}, headers=key)
        assert first.status_code == again.status_code == 201
        assert first.json()["networkResourceId"] == again.json()["networkResourceId"]
        assert len(api.get("/network/v1/networks").json()) == 1
        assert_problem(api.post("/network/v1/networks", json={"networkType": "vlan", "unknown": 1}), 400, "unknown")


# ------------------------------------------------------------------ attach / detach (service level)


def test_attach_and_detach_at_service_level(sqlite_vim: RunningServer) -> None:
    service = sqlite_vim.services.network  # type: ignore[attr-defined]
    with sqlite_vim.new_consumer().client() as api:
        net_id = network(api)["networkResourceId"]
        prt = port(api, net_id)
        row = service.attach(prt["resourceId"], "compute-1")
        assert row.attached_resource_id == "compute-1"
        assert api.get(f"/network/v1/ports/{prt['resourceId']}").json()["attachedResourceId"] == "compute-1"
        assert service.attach(prt["resourceId"], "compute-1").version == row.version  # idempotent
        with pytest.raises(Exception) as refused:
            service.attach(prt["resourceId"], "compute-2")
        assert getattr(refused.value, "status", None) == 409
        assert_problem(api.delete(f"/network/v1/ports/{prt['resourceId']}"), 409)
        service.detach(prt["resourceId"], "compute-1")
        assert api.get(f"/network/v1/ports/{prt['resourceId']}").json()["attachedResourceId"] is None
        assert api.delete(f"/network/v1/ports/{prt['resourceId']}").status_code == 204


def test_openapi_lists_the_network_operations(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.anonymous() as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
    for path in ("/network/v1/networks", "/network/v1/subnets/{subnetId}", "/network/v1/ports/{portId}",
                 "/network/v1/terminate", "/network-info/v1/capacity", "/network-info/v1/resource_types"):
        assert path in paths


def test_many_ports_get_distinct_addresses_quickly(sqlite_vim: RunningServer) -> None:
    async def run() -> list[dict]:
        headers = {"Authorization": f"Bearer {sqlite_vim.token()}"}
        async with httpx.AsyncClient(base_url=sqlite_vim.base_url, headers=headers, timeout=60) as api:
            net = (await api.post("/network/v1/networks", json={})).json()
            await api.post("/network/v1/subnets", json={"networkId": net["networkResourceId"], "ipVersion": "IPv4",
                                                        "cidr": "10.20.0.0/22"})
            responses = await asyncio.gather(*[
                api.post("/network/v1/ports", json={"networkId": net["networkResourceId"]}) for _ in range(100)])
            assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
            return [r.json() for r in responses]

    ports = asyncio.run(run())
    assert len({p["fixedIps"][0]["ipAddress"] for p in ports}) == 100
    assert len({p["macAddress"] for p in ports}) == 100


def test_affinity_groups(vim: RunningServer) -> None:
    owner, other = vim.new_consumer(), vim.new_consumer()
    with owner.client() as api, other.client() as theirs:
        created = api.post("/network/v1/affinity_groups", json={"groupName": "ha", "type": "ANTI_AFFINITY",
                                                                "scope": "PHYSICAL_NETWORK"})
        assert created.status_code == 201, created.text
        group = created.json()
        assert group["scope"] == "PHYSICAL_NETWORK" and group["type"] == "ANTI_AFFINITY"
        assert created.headers["location"].endswith(f"/network/v1/affinity_groups/{group['groupId']}")
        default = api.post("/network/v1/affinity_groups", json={"groupName": "x", "type": "AFFINITY"}).json()
        assert default["scope"] == "NFVI_NODE"
        assert_problem(api.post("/network/v1/affinity_groups", json={"groupName": "x", "type": "SIDEWAYS"}), 400, "type")
        assert {g["groupId"] for g in api.get("/network/v1/affinity_groups").json()} == {group["groupId"],
                                                                                          default["groupId"]}
        assert theirs.get("/network/v1/affinity_groups").json() == []
        assert_problem(theirs.get(f"/network/v1/affinity_groups/{group['groupId']}"), 404)
        assert_problem(theirs.delete(f"/network/v1/affinity_groups/{group['groupId']}"), 404)
        assert api.delete(f"/network/v1/affinity_groups/{group['groupId']}").status_code == 204
        assert_problem(api.get(f"/network/v1/affinity_groups/{group['groupId']}"), 404)


def test_a_port_whose_caller_went_away_is_undone(sqlite_vim: RunningServer) -> None:
    """A cancelled create_port (e.g. a compute allocation rolling back) leaves no port behind,
    even when the driver had already realised it."""
    import dataclasses

    from vimkit.auth.principal import Principal
    from vimkit.drivers.sim.config import LatencySpec
    from vimkit.models.network import VirtualNetworkPortData

    service = sqlite_vim.services.network  # type: ignore[attr-defined]
    driver = sqlite_vim.services.infrastructure.driver  # type: ignore[attr-defined]
    with sqlite_vim.client() as api:
        net_id = network(api)["networkResourceId"]
        subnet(api, net_id, "10.30.0.0/24")
    driver.config = dataclasses.replace(driver.config, latency_scale=1.0,
                                        latencies={"create_port": LatencySpec(300.0, 300.0)})
    admin = Principal("test", "rg-test", frozenset({"admin"}))

    async def cancel_midway() -> list[dict]:
        task = asyncio.create_task(service.create_port(admin, VirtualNetworkPortData(networkId=net_id)))
        seen: list[dict] = []
        while not seen and not task.done():
            await asyncio.sleep(0.02)
            with sqlite_vim.client() as api:
                seen = api.get("/network/v1/ports").json()
        task.cancel()
        await asyncio.sleep(0.6)  # the driver answers, the port is released and undone
        return seen

    reserved = asyncio.run(cancel_midway())
    assert [p["provisioningState"] for p in reserved] == ["ALLOCATING"]
    with sqlite_vim.client() as api:
        assert api.get("/network/v1/ports").json() == []
        capacity = api.get("/network-info/v1/capacity").json()["addresses"][0]
        assert capacity["allocated"] == 1  # the gateway only
    assert asyncio.run(driver.list_ports()) == []

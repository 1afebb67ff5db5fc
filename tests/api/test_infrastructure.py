"""Inventory, host admin states, capacity, resource zones and fault injection through HTTP."""

from __future__ import annotations

from pathlib import Path

from tests.api.test_notifications import FAST
from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver


def test_hosts_and_zones_of_the_default_inventory(vim: RunningServer) -> None:
    with vim.client() as api:
        hosts = api.get("/admin/v1/hosts").json()
        assert len(hosts) == 16 and {h["zoneId"] for h in hosts} == {"zone-a", "zone-b"}
        first = hosts[0]
        assert first["adminState"] == "ENABLED" and first["operationalState"] == "ENABLED"
        assert first["usage"]["vcpusUsed"] == 0 and first["usage"]["vcpusTotal"] > 0
        one = api.get(f"/admin/v1/hosts/{first['hostId']}")
        assert one.status_code == 200 and one.headers["etag"]
        assert len(api.get("/admin/v1/hosts", params={"zoneId": "zone-a"}).json()) == 8
        assert_problem(api.get("/admin/v1/hosts", params={"zoneId": "nowhere"}), 400, "zoneId")
        assert_problem(api.get("/admin/v1/hosts/no-such-host"), 404)
        zones = api.get("/admin/v1/zones").json()
        assert [z["zoneId"] for z in zones] == ["zone-a", "zone-b"]
    consumer = vim.new_consumer(scopes=["compute-info:read"])
    with consumer.client() as api:
        zones = api.get("/compute-info/v1/resource_zones").json()
        assert zones[0]["zoneState"] == "AVAILABLE" and zones[0]["nfviPopId"]
        assert api.get("/compute-info/v1/resource_zones/zone-b").json()["zoneId"] == "zone-b"
        assert_problem(api.get("/compute-info/v1/resource_zones/zone-z"), 404)
        assert_problem(api.get("/admin/v1/hosts"), 403)


def test_capacity_follows_admin_state_and_notifies(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, **FAST)
    receiver = Receiver().start()
    try:
        with server.client() as api:
            assert api.post("/compute-info/v1/subscriptions", json={
                "callbackUri": receiver.url, "filter": {"changeTypes": ["UPDATE"]}}).status_code == 201
            before = api.get("/compute-info/v1/capacity", params={"zoneId": "zone-a"}).json()
            assert before["schedulableHosts"] == 8 and before["vcpus"]["unavailable"] == 0
            assert before["vcpus"]["total"] == before["vcpus"]["available"] + before["vcpus"]["allocated"]
            host = api.get("/admin/v1/hosts", params={"zoneId": "zone-a"}).json()[0]
            etag = api.get(f"/admin/v1/hosts/{host['hostId']}").headers["etag"]
            assert_problem(api.patch(f"/admin/v1/hosts/{host['hostId']}", json={"adminState": "MAINTENANCE"},
                                     headers={"If-Match": '"stale"'}), 412)
            assert_problem(api.patch(f"/admin/v1/hosts/{host['hostId']}", json={"adminState": "ASLEEP"}), 400,
                           "adminState")
            changed = api.patch(f"/admin/v1/hosts/{host['hostId']}", json={"adminState": "MAINTENANCE"},
                                headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"})
            assert changed.status_code == 200, changed.text
            assert changed.json()["adminState"] == "MAINTENANCE" and changed.json()["schedulable"] is False
            after = api.get("/compute-info/v1/capacity", params={"zoneId": "zone-a"}).json()
            assert after["schedulableHosts"] == 7
            assert after["vcpus"]["available"] == before["vcpus"]["available"] - host["usage"]["vcpusTotal"]
            assert after["vcpus"]["unavailable"] == host["usage"]["vcpusTotal"]
            whole = api.get("/compute-info/v1/capacity").json()
            assert whole["hosts"] == 16 and whole["zoneId"] is None
        note = receiver.wait_for(1)[0]
        assert note["notificationType"] == "InformationChangeNotification" and note["changeType"] == "UPDATE"
        assert note["resourceTypeId"] == "zone:zone-a"
        assert note["changedResourceData"]["capacity"]["schedulableHosts"] == 7
        server.stop()
        restarted = start_server(tmp_path / "data", database_url, **FAST)
        try:
            with restarted.client() as api:
                assert api.get(f"/admin/v1/hosts/{host['hostId']}").json()["adminState"] == "MAINTENANCE"
        finally:
            restarted.stop()
    finally:
        receiver.stop()


def test_capacity_per_flavour_and_bad_queries(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as api:
        small = api.get("/compute-info/v1/capacity", params={"resourceTypeId": "m1.small"}).json()
        large = api.get("/compute-info/v1/capacity", params={"resourceTypeId": "m1.xlarge"}).json()
        assert small["availableInstances"] > large["availableInstances"] > 0
        assert_problem(api.get("/compute-info/v1/capacity", params={"resourceTypeId": "nope"}), 400, "resourceTypeId")
        assert_problem(api.get("/compute-info/v1/capacity", params={"zoneId": "nowhere"}), 400, "zoneId")


def test_host_down_fault_and_repair(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
    try:
        with server.client() as api:
            host_id = api.get("/admin/v1/hosts").json()[3]["hostId"]
            injected = api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": host_id})
            assert injected.status_code == 201, injected.text
            fault = injected.json()
            assert fault["kind"] == "HOST_DOWN" and fault["targetId"] == host_id
            view = _wait_host(api, host_id, "DISABLED")
            assert view["schedulable"] is False
            assert [f["id"] for f in api.get("/admin/v1/faults").json()] == [fault["id"]]
        server.stop()
        server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
        with server.client() as api:
            assert api.get(f"/admin/v1/hosts/{host_id}").json()["operationalState"] == "DISABLED"
            assert api.delete(f"/admin/v1/faults/{fault['id']}").status_code == 204
            _wait_host(api, host_id, "ENABLED")
            assert api.get("/admin/v1/faults").json() == []
            assert_problem(api.delete(f"/admin/v1/faults/{fault['id']}"), 404)
    finally:
        server.stop()


def _wait_host(api, host_id: str, state: str) -> dict:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + 5
    while True:
        view = api.get(f"/admin/v1/hosts/{host_id}").json()
        if view["operationalState"] == state or time.monotonic() > deadline:
            assert view["operationalState"] == state, view
            return view
        time.sleep(0.05)


def test_bad_fault_requests(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as api:
        host_id = api.get("/admin/v1/hosts").json()[0]["hostId"]
        assert_problem(api.post("/admin/v1/faults", json={"kind": "METEOR", "targetId": host_id}), 400, "kind")
        assert_problem(api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": "ghost"}), 400, "targetId")
        assert_problem(api.post("/admin/v1/faults", json={"kind": "CPU_LOAD", "targetId": "ghost",
                                                          "params": {"load": 500}}), 400)
        assert api.get("/admin/v1/faults").json() == []

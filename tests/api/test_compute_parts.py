"""Computes with their parts — NICs (new or existing ports) and volumes — through HTTP.

All-or-nothing allocation is proven by failing each step in turn with the simulator's
``fail_next`` and checking that capacity, ports, addresses and volume attachments are all back
to what they were; the same for Update. Also: the idempotent retry of an Allocate whose response
was lost, and parallel allocations that must not break anti-affinity or oversubscribe hosts.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.test_compute import (  # noqa: F401 - fixtures
    MERGE,
    WAIT,
    allocate,
    cvim,
    network_with_subnet,
    receiver,
    svim,
    used_vcpus,
    volume,
    wait_for,
)
from tests.conftest import RunningServer, assert_problem
from tests.receivers import Receiver


def ports(api: httpx.Client) -> dict[str, dict]:
    return {p["resourceId"]: p for p in api.get("/network/v1/ports").json()}


def attachments(api: httpx.Client, storage_id: str) -> list[str]:
    return [a["computeId"] for a in api.get(f"/storage/v1/storages/{storage_id}").json()["attachments"]]


def make_port(api: httpx.Client, network_id: str, **body: Any) -> str:
    response = api.post("/network/v1/ports", json={"networkId": network_id, **body})
    assert response.status_code == 201, response.text
    return response.json()["resourceId"]


def test_nics_and_volumes_at_allocation_and_termination(cvim: RunningServer) -> None:
    with cvim.new_consumer().client() as api:
        network_id, subnet_id = network_with_subnet(api)
        supplied = make_port(api, network_id)
        disks = [volume(api, 5, locationConstraints={"zoneId": "zone-a"}),
                 volume(api, 5, locationConstraints={"zoneId": "zone-a"})]
        compute = allocate(api, locationConstraints={"zoneId": "zone-a"}, storageIds=disks, interfaceData=[
            {"networkId": network_id, "ipAddress": ["10.1.0.50"], "metadata": {"role": "primary"}},
            {"networkPortId": supplied, "typeVirtualNic": "VIRTIO"}])
        assert compute["provisioningState"] == "ALLOCATED", compute
        compute_id = compute["computeId"]
        nics = compute["virtualNetworkInterface"]
        assert [n["ipAddress"] for n in nics][0] == ["10.1.0.50"]
        assert nics[0]["portCreatedByVim"] is True and nics[1]["portCreatedByVim"] is False
        assert nics[1]["networkPortId"] == supplied and nics[1]["typeVirtualNic"] == "VIRTIO"
        assert nics[0]["metadata"] == {"role": "primary"} and all(n["macAddress"] for n in nics)
        assert all(n["ownerId"] == compute_id and n["networkId"] == network_id for n in nics)
        assert [d["storageId"] for d in compute["virtualDisks"]] == disks
        assert all(d["device"].startswith("/dev/vd") for d in compute["virtualDisks"])
        # The volume shows the device the compute shows for it (the backend chose it at boot).
        assert all(api.get(f"/storage/v1/storages/{d['storageId']}").json()["attachments"]
                   == [{"computeId": compute_id, "hostId": compute["hostId"], "device": d["device"]}]
                   for d in compute["virtualDisks"])
        current = ports(api)
        assert {current[n["networkPortId"]]["attachedResourceId"] for n in nics} == {compute_id}
        assert all(attachments(api, d) == [compute_id] for d in disks)
        assert_problem(api.delete(f"/storage/v1/storages/{disks[0]}"), 409)
        assert_problem(api.delete(f"/network/v1/ports/{supplied}"), 409)
        # A port in use cannot be given to a second compute.
        problem = assert_problem(api.post("/compute/v1/computes", json={
            "computeFlavourId": "m1.small", "interfaceData": [{"networkPortId": supplied}]}), 409)
        assert problem["invalidParams"][0]["name"] == "interfaceData/0/networkPortId"

        assert api.delete(f"/compute/v1/computes/{compute_id}", headers=WAIT).status_code == 204
        after = ports(api)
        assert set(after) == {supplied} and after[supplied]["attachedResourceId"] is None
        assert all(attachments(api, d) == [] for d in disks)
        assert used_vcpus(api) == 0
        # The address of the deleted port is free again.
        make_port(api, network_id, fixedIps=[{"subnetId": subnet_id, "ipAddress": "10.1.0.50"}])


STEPS = [
    # (what fails, how it is made to fail, expected cause on the FAILED compute)
    ("port creation", lambda driver, ids: driver.fail_next("create_port", code="BACKEND_UNAVAILABLE"),
     "BACKEND_UNAVAILABLE"),
    ("address already taken", None, "CONFLICT"),
    ("compute creation", lambda driver, ids: driver.fail_next("create_compute", code="INTERNAL"), "INTERNAL"),
    ("second volume attachment", lambda driver, ids: driver.fail_next("attach_volume", target_id=ids[1],
                                                                        code="BACKEND_UNAVAILABLE"),
     "BACKEND_UNAVAILABLE"),
]


@pytest.mark.parametrize(("step", "inject", "cause"), STEPS, ids=[s[0] for s in STEPS])
def test_a_failure_at_any_step_leaves_nothing_behind(svim: RunningServer, receiver: Receiver, step: str,
                                                     inject: Any, cause: str) -> None:
    driver = svim.services.infrastructure.driver
    with svim.new_consumer().client() as api:
        api.post("/compute/v1/subscriptions", json={"callbackUri": receiver.url})
        network_id, subnet_id = network_with_subnet(api)
        supplied = make_port(api, network_id)
        disks = [volume(api, 5, locationConstraints={"zoneId": "zone-a"}),
                 volume(api, 5, locationConstraints={"zoneId": "zone-a"})]
        wanted_ip = "10.1.0.60"
        if inject is None:  # the address is taken by another port by the time the NIC is created
            make_port(api, network_id, fixedIps=[{"subnetId": subnet_id, "ipAddress": wanted_ip}])
        else:
            inject(driver, disks)
        before_ports = ports(api)
        before_capacity = api.get("/compute-info/v1/capacity").json()
        response = api.post("/compute/v1/computes", headers=WAIT, json={
            "computeFlavourId": "m1.small", "locationConstraints": {"zoneId": "zone-a"}, "storageIds": disks,
            "interfaceData": [{"networkId": network_id, "ipAddress": [wanted_ip]}, {"networkPortId": supplied}]})
        # A failed allocation is a final state: 201 with the FAILED compute, not a problem a client
        # would retry into a second compute.
        assert response.status_code == 201, response.text
        assert response.json()["provisioningState"] == "FAILED", step
        assert response.json()["error"]["cause"] == cause
        [failed] = api.get("/compute/v1/computes").json()
        assert failed["provisioningState"] == "FAILED" and failed["error"]["cause"] == cause
        assert failed["virtualNetworkInterface"] == [] and failed["virtualDisks"] == []
        # Everything is back: capacity, ports (the supplied one unattached), addresses, volumes.
        assert api.get("/compute-info/v1/capacity").json() == before_capacity
        assert used_vcpus(api) == 0
        after_ports = ports(api)
        assert set(after_ports) == set(before_ports), step
        assert after_ports[supplied]["attachedResourceId"] is None
        assert all(attachments(api, d) == [] for d in disks)
        assert all(driver._state.volumes[d].attachments == [] for d in disks), "the backend still holds a volume"
        if inject is not None:
            make_port(api, network_id, fixedIps=[{"subnetId": subnet_id, "ipAddress": wanted_ip}])
        notes = receiver.wait_for(1)
        assert notes[-1]["changeType"] == "FAILED" and notes[-1]["virtualisedResourceId"] == failed["computeId"]
        assert notes[-1]["changedResourceData"]["error"]["cause"] == cause
        # The FAILED compute can be deleted; then nothing at all is left.
        assert api.delete(f"/compute/v1/computes/{failed['computeId']}", headers=WAIT).status_code == 204
        assert api.get("/compute/v1/computes").json() == []
        assert driver.clear_failures() is None


def test_update_nics_disks_and_metadata(svim: RunningServer) -> None:
    driver = svim.services.infrastructure.driver
    with svim.new_consumer().client() as api:
        network_id, _subnet = network_with_subnet(api)
        supplied = make_port(api, network_id)
        first = volume(api, 5, locationConstraints={"zoneId": "zone-b"})
        compute = allocate(api, locationConstraints={"zoneId": "zone-b"}, storageIds=[first],
                           interfaceData=[{"networkPortId": supplied}], metadata={"a": "1", "b": "2"})
        url = f"/compute/v1/computes/{compute['computeId']}"
        second = volume(api, 5, locationConstraints={"zoneId": "zone-b"})
        updated = api.patch(url, headers=MERGE, json={
            "networkInterfaceNew": [{"networkId": network_id}], "networkInterfaceDelete": [supplied],
            "virtualDiskAttach": [second], "virtualDiskDetach": [first], "metadata": {"a": None, "c": "3"}})
        assert updated.status_code == 200, updated.text
        body = updated.json()
        assert body["metadata"] == {"b": "2", "c": "3"}
        [nic] = body["virtualNetworkInterface"]
        assert nic["portCreatedByVim"] is True and nic["networkId"] == network_id
        assert [d["storageId"] for d in body["virtualDisks"]] == [second]
        assert attachments(api, first) == [] and attachments(api, second) == [compute["computeId"]]
        assert ports(api)[supplied]["attachedResourceId"] is None
        changed = api.patch(url, headers=MERGE, json={"networkInterfaceUpdate": [
            {"resourceId": nic["resourceId"], "metadata": {"x": "y"}, "bandwidth": 100}]})
        assert changed.status_code == 200, changed.text
        assert changed.json()["virtualNetworkInterface"][0]["metadata"] == {"x": "y"}
        # Bad references name the field and change nothing.
        assert_problem(api.patch(url, headers=MERGE, json={"networkInterfaceDelete": ["nope"]}), 400,
                       "networkInterfaceDelete/0")
        assert_problem(api.patch(url, headers=MERGE, json={"virtualDiskDetach": [first]}), 400, "virtualDiskDetach/0")
        assert_problem(api.patch(url, headers=MERGE, json={"virtualDiskAttach": ["nope"]}), 400, "virtualDiskAttach/0")
        assert_problem(api.patch(url, headers=MERGE, json={"networkInterfaceNew": [{"networkId": "nope"}]}), 400,
                       "networkInterfaceNew/0/networkId")
        # A failure in the middle undoes the parts already done: the new NIC's port is gone again.
        before = api.get(url).json()
        port_count = len(ports(api))
        driver.fail_next("attach_volume", code="BACKEND_UNAVAILABLE")
        failed = api.patch(url, headers=MERGE, json={"networkInterfaceNew": [{"networkId": network_id}],
                                                     "virtualDiskAttach": [first]})
        assert_problem(failed, 503)
        after = api.get(url).json()
        assert after["virtualNetworkInterface"] == before["virtualNetworkInterface"]
        assert after["virtualDisks"] == before["virtualDisks"] and after["metadata"] == before["metadata"]
        assert len(ports(api)) == port_count and attachments(api, first) == []
        # Remove the VIM-created NIC: its port goes with it.
        removed = api.patch(url, headers=MERGE, json={"networkInterfaceDelete": [nic["resourceId"]]})
        assert removed.status_code == 200 and removed.json()["virtualNetworkInterface"] == []
        assert nic["resourceId"] not in ports(api)


def _drop_after_sending(base_url: str, token: str, key: str, body: dict) -> None:
    """Send an Allocate and close the connection without reading the answer (a lost response)."""
    parts = urlsplit(base_url)
    payload = json.dumps(body).encode()
    request = (f"POST /compute/v1/computes HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {len(payload)}\r\n"
               "Connection: close\r\n\r\n").encode() + payload
    with socket.create_connection((parts.hostname, parts.port)) as connection:
        connection.sendall(request)


def test_an_allocate_retried_after_a_lost_response_creates_one_compute(svim: RunningServer) -> None:
    consumer = svim.new_consumer()
    body = {"computeFlavourId": "m1.small", "computeName": "retried"}
    _drop_after_sending(svim.base_url, consumer.token(), "alloc-1", body)
    with consumer.client() as api:
        # The first request was processed although its answer never arrived.
        assert wait_for(lambda: api.get("/compute/v1/computes").json())
        deadline = time.monotonic() + 15
        while True:
            retry = api.post("/compute/v1/computes", json=body, headers={"Idempotency-Key": "alloc-1"})
            if retry.status_code != 409 or time.monotonic() > deadline:  # 409 while the first is in flight
                break
            time.sleep(0.05)
        assert retry.status_code == 201, retry.text
        assert retry.headers.get("Idempotent-Replayed") == "true"
        again = api.post("/compute/v1/computes", json=body, headers={"Idempotency-Key": "alloc-1"})
        assert again.json()["computeId"] == retry.json()["computeId"]
        assert_problem(api.post("/compute/v1/computes", json={**body, "computeName": "other"},
                                headers={"Idempotency-Key": "alloc-1"}), 422)
        listed = api.get("/compute/v1/computes").json()
        assert [c["computeId"] for c in listed] == [retry.json()["computeId"]]
        assert used_vcpus(api) == 1


def _parallel(api_factory: Any, bodies: list[dict]) -> list[httpx.Response]:
    def one(body: dict) -> httpx.Response:
        with api_factory() as api:
            return api.post("/compute/v1/computes", json=body, headers=WAIT)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, bodies))


def test_parallel_anti_affinity_holds(cvim: RunningServer) -> None:
    consumer = cvim.new_consumer()
    with consumer.client() as api:
        group_id = api.post("/compute/v1/affinity_groups", json={"type": "ANTI_AFFINITY"}).json()["groupId"]
    constraint = [{"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]
    responses = _parallel(consumer.client, [{"computeFlavourId": "m1.tiny", "affinityOrAntiAffinityConstraints":
                                             constraint} for _ in range(24)])
    placed = [r.json() for r in responses if r.status_code == 201]
    refused = [r.json() for r in responses if r.status_code != 201]
    assert len(placed) == 4 and len({c["hostId"] for c in placed}) == 4
    assert all(p["status"] == 409 and p["cause"] == "AFFINITY_UNSATISFIABLE" for p in refused)


def test_parallel_allocations_never_oversubscribe(cvim: RunningServer) -> None:
    consumer = cvim.new_consumer()
    responses = _parallel(consumer.client, [{"computeFlavourId": "m1.medium"} for _ in range(24)])
    assert sum(r.status_code == 201 for r in responses) == 8
    assert all(r.status_code == 201 or r.json()["cause"] == "NO_CAPACITY" for r in responses)
    with cvim.client() as admin:
        hosts = admin.get("/admin/v1/hosts").json()
        assert all(h["usage"]["vcpusUsed"] <= h["usage"]["vcpusTotal"] for h in hosts)
        assert sum(h["usage"]["vcpusUsed"] for h in hosts) == 16
    with consumer.client() as api:
        assert len(api.get("/compute/v1/computes").json()) == 8


def test_parallel_allocations_booting_one_volume(svim: RunningServer) -> None:
    """A single-attach volume given to several allocations at once goes to exactly one of them;
    the others are refused or end FAILED with nothing of theirs left behind."""
    consumer = svim.new_consumer()
    driver = svim.services.infrastructure.driver
    with consumer.client() as api:
        shared = volume(api, 5, locationConstraints={"zoneId": "zone-a"})
        before = api.get("/compute-info/v1/capacity").json()
    responses = _parallel(consumer.client, [{"computeFlavourId": "m1.tiny", "storageIds": [shared],
                                             "locationConstraints": {"zoneId": "zone-a"}} for _ in range(8)])
    computes = [r.json() for r in responses if r.status_code == 201]
    winners = [c for c in computes if c["provisioningState"] == "ALLOCATED"]
    assert len(winners) == 1, [r.text for r in responses]
    losers = [c for c in computes if c is not winners[0]]
    assert all(c["provisioningState"] == "FAILED" and c["error"]["cause"] == "CONFLICT" for c in losers)
    assert all(r.json()["invalidParams"][0]["name"] == "storageIds/0" for r in responses if r.status_code != 201)
    winner = winners[0]["computeId"]
    with consumer.client() as api:
        assert attachments(api, shared) == [winner]
        assert [d["storageId"] for d in winners[0]["virtualDisks"]] == [shared]
        for loser in losers:
            assert api.delete(f"/compute/v1/computes/{loser['computeId']}", headers=WAIT).status_code == 204
        assert [c["computeId"] for c in api.get("/compute/v1/computes").json()] == [winner]
        assert api.delete(f"/compute/v1/computes/{winner}", headers=WAIT).status_code == 204
        assert api.get("/compute-info/v1/capacity").json() == before
    assert [c for c, _device in driver._state.volumes[shared].attachments] == []


def test_owner_id_and_multi_attach_through_the_compute_api(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        response = api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 5, "multiAttach": True},
            "locationConstraints": {"zoneId": "zone-b"}})
        assert response.status_code == 201, response.text
        shared = response.json()["storageId"]
        single = volume(api, 5, locationConstraints={"zoneId": "zone-b"})
        first = allocate(api, locationConstraints={"zoneId": "zone-b"}, storageIds=[shared, single])
        second = allocate(api, locationConstraints={"zoneId": "zone-b"}, storageIds=[shared])
        owner = api.get(f"/storage/v1/storages/{shared}").json()
        assert owner["ownerId"] == first["computeId"]
        assert attachments(api, shared) == [first["computeId"], second["computeId"]]
        assert api.get(f"/storage/v1/storages/{single}").json()["ownerId"] == first["computeId"]
        assert_problem(api.patch(f"/compute/v1/computes/{second['computeId']}", headers=MERGE,
                                 json={"virtualDiskAttach": [single]}), 409, "virtualDiskAttach/0")
        assert_problem(api.post("/compute/v1/computes", headers=WAIT, json={
            "computeFlavourId": "m1.small", "storageIds": [single]}), 409, "storageIds/0")
        detached = api.patch(f"/compute/v1/computes/{first['computeId']}", headers=MERGE,
                             json={"virtualDiskDetach": [single, shared]})
        assert detached.status_code == 200, detached.text
        assert "ownerId" not in api.get(f"/storage/v1/storages/{single}").json()
        assert api.get(f"/storage/v1/storages/{shared}").json()["ownerId"] == second["computeId"]

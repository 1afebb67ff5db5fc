"""Computes through the HTTP API (rest-binding.md §3, §1.5, §5), on SQLite and PostgreSQL.

The servers run the simulated infrastructure on ``COMPUTE_INVENTORY``: two zones of two hosts,
each host 4 vCPUs (no overcommit), 8 GB and 100 GB of local disk, so the seeded flavours fill
them predictably (m1.small: 4 per host, m1.medium: 2, m1.large: 1); one VLAN provider network
and a 200 GB volume pool per zone. Notifications go to real HTTP receivers on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver

MERGE = {"Content-Type": "application/merge-patch+json"}
WAIT = {"Prefer": "wait=20"}

COMPUTE_INVENTORY = """\
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
""" + "".join(f"""
[[hosts]]
hostId = "host-{zone}{n}"
zoneId = "zone-{zone}"
vcpus = 4
cpuAllocationRatio = 1.0
memoryMb = 8192
diskGb = 100
""" for zone in "ab" for n in (1, 2)) + """
[[providerNetworks]]
providerNetworkId = "vlan-1"
networkType = "vlan"
physicalNetwork = "physnet1"
segmentationRanges = [[100, 110]]
mtu = 1500

[[storagePools]]
poolId = "pool-a"
zoneId = "zone-a"
typeOfStorage = "volume"
capacityGb = 200

[[storagePools]]
poolId = "pool-b"
zoneId = "zone-b"
typeOfStorage = "volume"
capacityGb = 200
multiAttach = true
"""


def compute_settings(directory: Path, **overrides: object) -> dict[str, object]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "compute-inventory.toml"
    path.write_text(COMPUTE_INVENTORY)
    settings: dict[str, object] = {"inventory_file": path, "sim_latency_scale": 0.0, "notify_backoff_base": 0.05,
                                   "notify_backoff_cap": 0.3, "notify_poll_interval": 0.1}
    settings.update(overrides)
    return settings


@pytest.fixture
def cvim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", database_url, **compute_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def svim(tmp_path: Path) -> Iterator[RunningServer]:
    """SQLite only, for behaviour that does not depend on the database."""
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", **compute_settings(tmp_path))
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


def allocate(api: httpx.Client, expect: int = 201, wait: bool = True, **body: Any) -> dict:
    body.setdefault("computeFlavourId", "m1.small")
    response = api.post("/compute/v1/computes", json=body, headers=WAIT if wait else {})
    assert response.status_code == expect, response.text
    return response.json()


def wait_for(predicate, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def used_vcpus(api: httpx.Client) -> int:
    response = api.get("/compute-info/v1/capacity")
    assert response.status_code == 200, response.text
    return int(response.json()["vcpus"]["allocated"])


def operate(api: httpx.Client, compute_id: str, operation: str, expect: int = 200, **inputs: str) -> dict:
    body: dict[str, Any] = {"computeOperation": operation}
    if inputs:
        body["computeOperationInputData"] = inputs
    response = api.post(f"/compute/v1/computes/{compute_id}/operate", json=body, headers=WAIT)
    assert response.status_code == expect, f"{operation}: {response.text}"
    return response.json()


def network_with_subnet(api: httpx.Client, cidr: str = "10.1.0.0/24") -> tuple[str, str]:
    network = api.post("/network/v1/networks", json={"networkResourceName": "cluster", "networkType": "vlan"})
    assert network.status_code == 201, network.text
    network_id = network.json()["networkResourceId"]
    subnet = api.post("/network/v1/subnets", json={"networkId": network_id, "cidr": cidr, "ipVersion": "IPv4",
                                                   "gatewayIp": cidr.replace("0/24", "1")})
    assert subnet.status_code == 201, subnet.text
    return network_id, subnet.json()["resourceId"]


def volume(api: httpx.Client, size: int = 10, **extra: Any) -> str:
    response = api.post("/storage/v1/storages", json={"storageData": {"typeOfStorage": "volume", "sizeOfStorage": size},
                                                      **extra})
    assert response.status_code == 201, response.text
    return response.json()["storageId"]


# --------------------------------------------------------------------------- allocate / query / terminate


def test_allocate_completes_in_the_background_and_notifies(cvim: RunningServer, receiver: Receiver) -> None:
    with cvim.new_consumer().client() as api:
        subscribed = api.post("/compute/v1/subscriptions", json={"callbackUri": receiver.url})
        assert subscribed.status_code == 201, subscribed.text
        created = api.post("/compute/v1/computes", json={
            "computeFlavourId": "m1.small", "computeName": "node-1", "metadata": [{"key": "cluster", "value": "c1"}],
            "userData": {"content": "#cloud-config\n"}, "vcImageId": "ubuntu-24.04", "reservationId": "r-1"})
        assert created.status_code == 201, created.text
        body = created.json()
        compute_id = body["computeId"]
        assert created.headers["Location"].endswith(f"/compute/v1/computes/{compute_id}")
        assert body["provisioningState"] == "ALLOCATING" and body["runningState"] == "STARTING"
        assert body["hostId"] and body["zoneId"] and body["flavourId"] == "m1.small"
        done = wait_for(lambda: api.get(f"/compute/v1/computes/{compute_id}").json()["provisioningState"] == "ALLOCATED")
        assert done
        current = api.get(f"/compute/v1/computes/{compute_id}").json()
        assert current["runningState"] == "RUNNING" and current["operationalState"] == "ENABLED"
        assert current["virtualCpu"]["numVirtualCpu"] == 1 and current["virtualMemory"]["virtualMemSize"] == 2048
        assert current["metadata"] == {"cluster": "c1"} and current["vcImageId"] == "ubuntu-24.04"
        for query in ("(eq,computeName,node-1)", "(eq,metadata/cluster,c1)", f"(eq,hostId,{current['hostId']})",
                      f"(eq,zoneId,{current['zoneId']})", "(eq,provisioningState,ALLOCATED)",
                      "(eq,runningState,RUNNING)"):
            listed = api.get("/compute/v1/computes", params={"filter": query})
            assert listed.status_code == 200, listed.text
            assert [c["computeId"] for c in listed.json()] == [compute_id], query
        assert api.get("/compute/v1/computes", params={"filter": "(eq,computeName,other)"}).json() == []
        assert_problem(api.get("/compute/v1/computes", params={"filter": "(eq,nonsense,1)"}), 400)

        deleted = api.delete(f"/compute/v1/computes/{compute_id}")
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["provisioningState"] == "TERMINATING"
        assert wait_for(lambda: api.get(f"/compute/v1/computes/{compute_id}").status_code == 404)
        assert_problem(api.delete(f"/compute/v1/computes/{compute_id}"), 404)
        notes = receiver.wait_for(2)
        assert [n["changeType"] for n in notes] == ["ADDED", "REMOVED"]
        assert notes[0]["changedResourceData"]["provisioningState"] == "ALLOCATED"
        assert notes[0]["virtualisedResourceId"] == compute_id and notes[0]["resourceType"] == "COMPUTE"
        assert used_vcpus(api) == 0


def test_prefer_wait_answers_with_the_final_state(cvim: RunningServer) -> None:
    with cvim.new_consumer().client() as api:
        response = api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small"}, headers=WAIT)
        assert response.status_code == 201 and response.headers["Preference-Applied"] == "wait"
        assert response.json()["provisioningState"] == "ALLOCATED"
        compute_id = response.json()["computeId"]
        # The answer is the compute as its completion wrote it: what a GET reads, same ETag.
        fetched = api.get(f"/compute/v1/computes/{compute_id}")
        assert fetched.json() == response.json() and fetched.headers["ETag"] == response.headers["ETag"]
        stopped = api.post(f"/compute/v1/computes/{compute_id}/operate", json={"computeOperation": "STOP"},
                           headers=WAIT)
        assert stopped.status_code == 200 and stopped.json()["runningState"] == "STOPPED"
        assert stopped.json()["lastOperation"]["status"] == "COMPLETED"
        deleted = api.delete(f"/compute/v1/computes/{compute_id}", headers=WAIT)
        assert deleted.status_code == 204 and deleted.headers["Preference-Applied"] == "wait"


@pytest.mark.parametrize(("body", "status", "name"), [
    ({}, 400, "computeFlavourId"),
    ({"computeFlavourId": "no-such-flavour"}, 400, "computeFlavourId"),
    ({"computeFlavourId": 7}, 400, "computeFlavourId"),
    ({"computeFlavourId": "m1.small", "locationConstraints": {"zoneId": "zone-x"}}, 400, "locationConstraints/zoneId"),
    ({"computeFlavourId": "m1.small", "locationConstraints": {"hostId": "host-x"}}, 400, "locationConstraints/hostId"),
    ({"computeFlavourId": "m1.small", "locationConstraints": {"zoneId": "zone-a", "hostId": "host-b1"}}, 400,
     "locationConstraints/hostId"),
    ({"computeFlavourId": "m1.small", "interfaceData": [{"networkId": "no-net"}]}, 400, "interfaceData/0/networkId"),
    ({"computeFlavourId": "m1.small", "interfaceData": [{"networkPortId": "no-port"}]}, 400,
     "interfaceData/0/networkPortId"),
    ({"computeFlavourId": "m1.small", "interfaceData": [{}]}, 400, "interfaceData/0"),
    ({"computeFlavourId": "m1.small", "storageIds": ["no-volume"]}, 400, "storageIds/0"),
    ({"computeFlavourId": "m1.small", "metadata": {"k": 5}}, 400, "metadata/k"),
    ({"computeFlavourId": "m1.small", "userData": {"content": "x", "method": "FLOPPY"}}, 400, "userData/method"),
    ({"computeFlavourId": "m1.small", "affinityOrAntiAffinityConstraints": [
        {"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": "no-group"}]}, 400,
     "affinityOrAntiAffinityConstraints/0/affinityOrAntiAffinityResourceGroupId"),
    ({"computeFlavourId": "m1.small", "affinityOrAntiAffinityConstraints": [{"type": "AFFINITY"}]}, 400,
     "affinityOrAntiAffinityConstraints/0"),
    ({"computeFlavourId": "m1.small", "surprise": 1}, 400, "surprise"),
    ({"computeFlavourId": "m1.xlarge"}, 409, None),
])
def test_bad_allocations_are_refused_and_store_nothing(svim: RunningServer, body: dict, status: int,
                                                       name: str | None) -> None:
    with svim.new_consumer().client() as api:
        problem = assert_problem(api.post("/compute/v1/computes", json=body, headers=WAIT), status, name)
        if status == 409:
            assert problem["cause"] == "NO_CAPACITY"
        assert api.get("/compute/v1/computes").json() == []
        assert used_vcpus(api) == 0


def test_resource_group_and_tenant_rules(svim: RunningServer) -> None:
    owner, other = svim.new_consumer(), svim.new_consumer()
    with owner.client() as api:
        assert_problem(api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small",
                                                               "resourceGroupId": "rg-someone-else"}), 403)
        mine = allocate(api)
    with other.client() as api:
        url = f"/compute/v1/computes/{mine['computeId']}"
        assert_problem(api.get(url), 404)
        assert_problem(api.delete(url), 404)
        assert_problem(api.post(f"{url}/operate", json={"computeOperation": "STOP"}), 404)
        assert api.get("/compute/v1/computes").json() == []
        assert api.post("/compute/v1/terminate", json={"computeId": [mine["computeId"]]}).json() == {"computeId": []}
    with svim.client() as admin:
        placed = allocate(admin, resourceGroupId=owner.resource_group_id)
        assert placed["resourceGroupId"] == owner.resource_group_id


def test_location_constraints_and_capacity(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        pinned = allocate(api, computeFlavourId="m1.large", locationConstraints={"hostId": "host-a1"})
        assert pinned["hostId"] == "host-a1"
        assert_problem(api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small",
                                                               "locationConstraints": {"hostId": "host-a1"}}), 409)
        in_zone = allocate(api, computeFlavourId="m1.large", locationConstraints={"zoneId": "zone-a"})
        assert in_zone["hostId"] == "host-a2"
        problem = assert_problem(api.post("/compute/v1/computes", json={
            "computeFlavourId": "m1.small", "locationConstraints": {"zoneId": "zone-a"}}), 409)
        assert problem["cause"] == "NO_CAPACITY"
        capacity = api.get("/compute-info/v1/capacity", params={"zoneId": "zone-a",
                                                                 "resourceTypeId": "m1.small"}).json()
        assert capacity["vcpus"]["allocated"] == 8 and capacity["availableInstances"] == 0


def test_batch_terminate_is_best_effort(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        ids = [allocate(api)["computeId"] for _ in range(3)]
        response = api.post("/compute/v1/terminate", json={"computeId": [*ids, "unknown-id"]})
        assert response.status_code == 200, response.text
        assert sorted(response.json()["computeId"]) == sorted(ids)
        assert api.get("/compute/v1/computes").json() == []
        assert used_vcpus(api) == 0
        assert_problem(api.post("/compute/v1/terminate", json={"computeId": []}), 400, "computeId")


# --------------------------------------------------------------------------- operate


def test_running_state_machine(svim: RunningServer, receiver: Receiver) -> None:
    with svim.new_consumer().client() as api:
        api.post("/compute/v1/subscriptions", json={"callbackUri": receiver.url})
        compute_id = allocate(api)["computeId"]
        receiver.wait_for(1)
        # (operation, input, expected runningState, or None for an illegal transition)
        steps: list[tuple[str, dict[str, str], str | None]] = [
            ("START", {}, None), ("UNPAUSE", {}, None), ("RESUME", {}, None),
            ("PAUSE", {}, "PAUSED"), ("PAUSE", {}, None), ("REBOOT", {}, None), ("RESUME", {}, None),
            ("UNPAUSE", {}, "RUNNING"),
            ("SUSPEND", {}, "SUSPENDED"), ("PAUSE", {}, None), ("START", {}, None), ("REBOOT", {"type": "HARD"}, None),
            ("RESUME", {}, "RUNNING"),
            ("REBOOT", {}, "RUNNING"),
            ("PAUSE", {}, "PAUSED"), ("REBOOT", {"type": "HARD"}, "RUNNING"),
            ("STOP", {}, "STOPPED"), ("STOP", {}, None), ("PAUSE", {}, None), ("SUSPEND", {}, None),
            ("REBOOT", {}, None), ("UNPAUSE", {}, None),
            ("START", {}, "RUNNING"),
        ]
        changes = 0
        for operation, inputs, expected in steps:
            if expected is None:
                problem = assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate", json={
                    "computeOperation": operation, "computeOperationInputData": inputs}), 409)
                assert operation in problem["detail"]
            else:
                result = operate(api, compute_id, operation, **inputs)
                assert result["runningState"] == expected, operation
                assert result["provisioningState"] == "ALLOCATED"
                changes += 1
        notes = receiver.wait_for(1 + changes)
        assert [n["changeType"] for n in notes[1:]] == ["MODIFIED"] * changes
        assert [n["changedResourceData"]["runningState"] for n in notes[1:]] == [
            expected for _op, _in, expected in steps if expected is not None]
        assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate", json={
            "computeOperation": "REBOOT", "computeOperationInputData": {"type": "GENTLE"}}), 400,
            "computeOperationInputData/type")
        assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate", json={"computeOperation": "EXPLODE"}),
                       400, "computeOperation")


def test_snapshots(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        compute_id = allocate(api)["computeId"]
        created = operate(api, compute_id, "CREATE_SNAPSHOT", snapshotName="before-upgrade")
        snapshot_id = created["computeOperationOutputData"]["snapshotId"]
        assert [s["snapshotId"] for s in created["snapshots"]] == [snapshot_id]
        assert created["snapshots"][0]["snapshotName"] == "before-upgrade"
        # A compute booted from the snapshot (the snapshot is an image of this resource group).
        assert allocate(api, vcImageId=snapshot_id)["vcImageId"] == snapshot_id
        with svim.new_consumer().client() as other:
            assert_problem(other.post("/compute/v1/computes", json={"computeFlavourId": "m1.small",
                                                                     "vcImageId": snapshot_id}), 400, "vcImageId")
        assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate", json={
            "computeOperation": "DELETE_SNAPSHOT"}), 400, "computeOperationInputData/snapshotId")
        assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate", json={
            "computeOperation": "DELETE_SNAPSHOT", "computeOperationInputData": {"snapshotId": "nope"}}), 400,
            "computeOperationInputData/snapshotId")
        deleted = operate(api, compute_id, "DELETE_SNAPSHOT", snapshotId=snapshot_id)
        assert deleted["snapshots"] == [] and deleted["computeOperationOutputData"]["deleted"] is True


def test_a_busy_compute_refuses_another_task(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}",
                          **compute_settings(tmp_path, sim_latency_scale=100.0))
    try:
        with server.new_consumer().client() as api:
            compute_id = allocate(api)["computeId"]
            started = api.post(f"/compute/v1/computes/{compute_id}/operate", json={"computeOperation": "REBOOT"})
            assert started.status_code == 202, started.text
            assert started.json()["provisioningState"] == "UPDATING"
            assert started.json()["runningState"] == "REBOOTING"
            assert started.json()["lastOperation"]["status"] == "PROCESSING"
            url = f"/compute/v1/computes/{compute_id}"
            assert_problem(api.post(f"{url}/operate", json={"computeOperation": "STOP"}), 409)
            assert_problem(api.post(f"{url}/scale", json={"computeFlavourId": "m1.medium"}), 409)
            assert_problem(api.delete(url), 409)
            assert wait_for(lambda: api.get(url).json()["provisioningState"] == "ALLOCATED", 30)
            assert api.get(url).json()["lastOperation"]["status"] == "COMPLETED"
    finally:
        server.stop()


def test_a_failed_operation_leaves_the_compute_as_it_was(svim: RunningServer) -> None:
    driver = svim.services.infrastructure.driver
    with svim.new_consumer().client() as api:
        compute_id = allocate(api)["computeId"]
        driver.fail_next("stop_compute", target_id=compute_id, code="BACKEND_UNAVAILABLE", message="hypervisor busy")
        problem = assert_problem(api.post(f"/compute/v1/computes/{compute_id}/operate",
                                          json={"computeOperation": "STOP"}, headers=WAIT), 503)
        assert "hypervisor busy" in problem["detail"]
        current = api.get(f"/compute/v1/computes/{compute_id}").json()
        assert current["provisioningState"] == "ALLOCATED" and current["runningState"] == "RUNNING"
        assert current["lastOperation"]["status"] == "FAILED"
        assert current["lastOperation"]["error"]["cause"] == "BACKEND_UNAVAILABLE"
        assert operate(api, compute_id, "STOP")["runningState"] == "STOPPED"


# --------------------------------------------------------------------------- scale / migrate


def test_scale_reclaims_capacity_in_place_or_elsewhere(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        first = allocate(api, computeFlavourId="m1.medium", locationConstraints={"hostId": "host-a1"})
        url = f"/compute/v1/computes/{first['computeId']}"
        scaled = api.post(f"{url}/scale", json={"computeFlavourId": "m1.large"}, headers=WAIT)
        assert scaled.status_code == 200, scaled.text
        assert scaled.json()["flavourId"] == "m1.large" and scaled.json()["hostId"] == "host-a1"
        assert scaled.json()["virtualCpu"]["numVirtualCpu"] == 4
        assert used_vcpus(api) == 4
        # Back to medium, then fill host-a1 so that growing needs another host.
        assert api.post(f"{url}/scale", json={"computeFlavourId": "m1.medium"}, headers=WAIT).status_code == 400
        # (a local disk cannot shrink: m1.large has 80 GB, m1.medium 40 GB)
    with svim.new_consumer().client() as api:
        small = allocate(api, computeFlavourId="m1.small", locationConstraints={"hostId": "host-b1"})
        filler = allocate(api, computeFlavourId="m1.medium", locationConstraints={"hostId": "host-b1"})
        allocate(api, computeFlavourId="m1.small", locationConstraints={"hostId": "host-b1"})
        url = f"/compute/v1/computes/{small['computeId']}"
        moved = api.post(f"{url}/scale", json={"computeFlavourId": "m1.medium"}, headers=WAIT)
        assert moved.status_code == 200, moved.text
        assert moved.json()["hostId"] != "host-b1" and moved.json()["flavourId"] == "m1.medium"
        hosts = {h["hostId"]: h["usage"]["vcpusUsed"] for h in svim.client().get("/admin/v1/hosts").json()}
        assert hosts["host-b1"] == 3  # the two fillers are left there
        assert_problem(api.post(f"{url}/scale", json={"computeFlavourId": "m1.medium"}), 400, "computeFlavourId")
        assert_problem(api.post(f"{url}/scale", json={"computeFlavourId": "nope"}), 400, "computeFlavourId")
        # Fill everything: a scale that fits nowhere is refused and changes nothing.
        while api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small"}, headers=WAIT).status_code == 201:
            pass
        before = used_vcpus(api)
        problem = assert_problem(api.post(f"/compute/v1/computes/{filler['computeId']}/scale",
                                          json={"computeFlavourId": "m1.large"}), 409)
        assert problem["cause"] == "NO_CAPACITY"
        assert used_vcpus(api) == before


def test_migrate_live_and_offline(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        compute = allocate(api, locationConstraints={"hostId": "host-a1"})
        url = f"/compute/v1/computes/{compute['computeId']}"
        live = api.post(f"{url}/migrate", json={"migrationType": "LIVE_MIGRATION",
                                                "migrationConstraint": {"hostId": "host-b2"}}, headers=WAIT)
        assert live.status_code == 200, live.text
        assert live.json()["hostId"] == "host-b2" and live.json()["zoneId"] == "zone-b"
        assert live.json()["runningState"] == "RUNNING"
        hosts = {h["hostId"]: h["usage"]["vcpusUsed"] for h in svim.client().get("/admin/v1/hosts").json()}
        assert hosts["host-a1"] == 0 and hosts["host-b2"] == 1
        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"hostId": "host-b2"}}), 409)
        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"zoneId": "zone-q"}}), 400,
                       "migrationConstraint/zoneId")
        operate(api, compute["computeId"], "STOP")
        assert_problem(api.post(f"{url}/migrate", json={"migrationType": "LIVE_MIGRATION"}), 409)
        offline = api.post(f"{url}/migrate", json={"migrationType": "OFFLINE_MIGRATION",
                                                   "migrationConstraint": {"zoneId": "zone-a"}}, headers=WAIT)
        assert offline.status_code == 200, offline.text
        assert offline.json()["zoneId"] == "zone-a" and offline.json()["runningState"] == "STOPPED"


# --------------------------------------------------------------------------- affinity


def test_affinity_groups_and_resource_lists(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        group = api.post("/compute/v1/affinity_groups", json={"groupName": "control-plane", "type": "ANTI_AFFINITY"})
        assert group.status_code == 201, group.text
        group_id = group.json()["groupId"]
        assert group.json()["scope"] == "NFVI_NODE" and group.json()["members"] == []
        constraint = [{"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]
        placed = [allocate(api, affinityOrAntiAffinityConstraints=constraint) for _ in range(4)]
        assert len({c["hostId"] for c in placed}) == 4
        problem = assert_problem(api.post("/compute/v1/computes", json={
            "computeFlavourId": "m1.small", "affinityOrAntiAffinityConstraints": constraint}), 409)
        assert problem["cause"] == "AFFINITY_UNSATISFIABLE"
        members = api.get(f"/compute/v1/affinity_groups/{group_id}").json()["members"]
        assert sorted(members) == sorted(c["computeId"] for c in placed)
        assert_problem(api.delete(f"/compute/v1/affinity_groups/{group_id}"), 409)
        assert_problem(api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small",
                                                               "affinityOrAntiAffinityConstraints": [
            {"type": "AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]}), 400,
            "affinityOrAntiAffinityConstraints/0/type")
        # SOFT anti-affinity by resource list: best effort, so it still succeeds when all hosts are taken.
        soft = allocate(api, affinityOrAntiAffinityConstraints=[{
            "type": "ANTI_AFFINITY", "enforcement": "SOFT",
            "affinityOrAntiAffinityResourceList": {"resource": [c["computeId"] for c in placed]}}])
        assert soft["provisioningState"] == "ALLOCATED"
        # Affinity with a zone scope by resource list.
        near = allocate(api, affinityOrAntiAffinityConstraints=[{
            "type": "AFFINITY", "scope": "ZONE",
            "affinityOrAntiAffinityResourceList": {"resource": [placed[0]["computeId"]]}}])
        assert near["zoneId"] == placed[0]["zoneId"]
        # Migration keeps the group's rule: no free host is left for a member.
        assert_problem(api.post(f"/compute/v1/computes/{placed[0]['computeId']}/migrate", json={}), 409)
        assert api.post("/compute/v1/terminate", json={"computeId": [c["computeId"] for c in placed]}).status_code == 200
        assert api.get(f"/compute/v1/affinity_groups/{group_id}").json()["members"] == []
        assert api.delete(f"/compute/v1/affinity_groups/{group_id}").status_code == 204
        assert_problem(api.get(f"/compute/v1/affinity_groups/{group_id}"), 404)


# --------------------------------------------------------------------------- infrastructure-caused changes


def test_crash_host_down_and_maintenance_are_announced(svim: RunningServer, receiver: Receiver) -> None:
    owner = svim.new_consumer()
    with owner.client() as api, svim.client() as admin:
        api.post("/compute/v1/subscriptions", json={"callbackUri": receiver.url})
        first = allocate(api, locationConstraints={"hostId": "host-a1"})
        second = allocate(api, locationConstraints={"hostId": "host-b1"})
        receiver.wait_for(2)
        fault = admin.post("/admin/v1/faults", json={"kind": "COMPUTE_CRASH", "targetId": first["computeId"]})
        assert fault.status_code == 201, fault.text
        notes = receiver.wait_for(3)
        assert notes[2]["virtualisedResourceId"] == first["computeId"]
        assert notes[2]["changedResourceData"]["runningState"] == "CRASHED"
        assert notes[2]["changedResourceData"]["operationalState"] == "DISABLED"
        # A crashed compute can be started again (or stopped); the repair restarts it too.
        assert operate(api, first["computeId"], "START")["runningState"] == "RUNNING"
        assert admin.delete(f"/admin/v1/faults/{fault.json()['id']}").status_code in (200, 204)
        count = len(receiver.notifications)
        down = admin.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": "host-b1"})
        assert down.status_code == 201, down.text
        crashed = wait_for(lambda: api.get(f"/compute/v1/computes/{second['computeId']}").json()["runningState"]
                           == "CRASHED")
        assert crashed
        assert_problem(api.post(f"/compute/v1/computes/{second['computeId']}/operate",
                                json={"computeOperation": "START"}, headers=WAIT), 503)
        count = len(receiver.wait_for(count + 1))
        maintenance = admin.patch("/admin/v1/hosts/host-a1", json={"adminState": "MAINTENANCE"}, headers=MERGE)
        assert maintenance.status_code == 200, maintenance.text
        assert wait_for(lambda: any(n["virtualisedResourceId"] == first["computeId"] and
                                    n["changedResourceData"].get("hostState") == "MAINTENANCE"
                                    for n in list(receiver.notifications)[count:]))
        assert api.get(f"/compute/v1/computes/{first['computeId']}").json()["hostState"] == "MAINTENANCE"


# --------------------------------------------------------------------------- information


def test_compute_resource_information(svim: RunningServer) -> None:
    with svim.new_consumer().client() as api:
        types = api.get("/compute-info/v1/resource_types")
        assert types.status_code == 200, types.text
        [kind] = types.json()
        assert kind["virtualCPU"]["numVirtualCpu"] == 4 and kind["virtualMemory"]["virtualMemSize"] == 8192
        assert kind["hosts"] == 4 and sorted(kind["zoneIds"]) == ["zone-a", "zone-b"]
        assert_problem(api.get("/compute-info/v1/resource_types", params={"zoneId": "zone-x"}), 400, "zoneId")
        for host in ("host-a1", "host-a2"):
            allocate(api, computeFlavourId="m1.medium", locationConstraints={"hostId": host})
        [zone_a] = api.get("/compute-info/v1/resource_types", params={"zoneId": "zone-a"}).json()
        assert zone_a["virtualCPU"]["numVirtualCpu"] == 2 and zone_a["zoneIds"] == ["zone-a"]


def test_capacity_changes_are_announced_once_per_interval(tmp_path: Path, receiver: Receiver) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}",
                          **compute_settings(tmp_path, capacity_notify_interval=0.3))
    try:
        with server.new_consumer().client() as api:
            assert api.post("/compute-info/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            for _ in range(3):
                allocate(api, locationConstraints={"zoneId": "zone-b"})
            notes = receiver.wait_for(1)
            time.sleep(1.0)  # quiet: nothing changes, nothing more is announced
            notes = list(receiver.notifications)
            assert all(n["notificationType"] == "InformationChangeNotification" for n in notes)
            zones = [n for n in notes if n["resourceTypeId"] == "zone:zone-b"]
            assert zones and len(zones) <= 3, notes
            assert zones[-1]["changedResourceData"]["capacity"]["vcpus"]["allocated"] == 3
            assert not [n for n in notes if n["resourceTypeId"] == "zone:zone-a"]
    finally:
        server.stop()


def test_capacity_changed_before_the_first_round_is_announced(tmp_path: Path, receiver: Receiver) -> None:
    """The announcer's baseline is taken at start-up: an allocation made before its first round
    (here within 3 s of start) is announced at that round, not taken as the baseline."""
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}",
                          **compute_settings(tmp_path, capacity_notify_interval=3.0))
    try:
        with server.new_consumer().client() as api:
            assert api.post("/compute-info/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            allocate(api, locationConstraints={"zoneId": "zone-b"})
            notes = receiver.wait_for(1)
            assert [n["resourceTypeId"] for n in notes] == ["zone:zone-b"], notes
            assert notes[0]["changedResourceData"]["capacity"]["vcpus"]["allocated"] == 1
    finally:
        server.stop()


def test_list_pages_send_the_stored_documents_with_their_links(database_url: str, tmp_path: Path) -> None:
    """A page kept whole is sent as stored (not decoded and encoded again): the same documents a
    GET of each returns, on every page; attribute selectors still reduce them."""
    server = start_server(tmp_path / "data", database_url, page_size=2, **compute_settings(tmp_path))
    try:
        with server.new_consumer().client() as api:
            made = [allocate(api, computeName=name, metadata={"label": value})
                    for name, value in (("n-1", "日本語 \"quoted\" \\ back"), ("n-2", ""), ("n-3", "🎉"))]
            listed, url, params = [], "/compute/v1/computes", None
            while url:
                page = api.get(url, params=params)
                assert page.status_code == 200 and page.headers["content-type"] == "application/json"
                listed.extend(page.json())
                link = page.links.get("next")
                url, params = (link["url"], None) if link else (None, None)
            assert [item["computeId"] for item in listed] == [item["computeId"] for item in made]
            for item in listed:
                assert item == api.get(f"/compute/v1/computes/{item['computeId']}").json()
            assert listed[0]["_links"]["self"]["href"].endswith(f"/compute/v1/computes/{made[0]['computeId']}")
            both = api.get("/compute/v1/computes", params={"all_fields": "", "filter": "(eq,computeName,n-1)"})
            assert both.json() == [listed[0]]
            reduced = api.get("/compute/v1/computes", params={"exclude_fields": "metadata",
                                                             "filter": "(eq,computeName,n-1)"}).json()
            assert "metadata" not in reduced[0] and reduced[0]["_links"] == listed[0]["_links"]
    finally:
        server.stop()

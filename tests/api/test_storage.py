"""Volumes through the HTTP API (rest-binding.md §4 storage, §5, §6), on SQLite and PostgreSQL.

The servers run the simulated infrastructure with four small pools (``STORAGE_INVENTORY``):
zone-a: pool-a1 (100 GB × 1.5 = 150 allocatable), pool-a2 (100, multi-attach); zone-b: pool-b
(100, RDMA) and pool-ssd (type ``ssd``, 50). Notifications go to real HTTP receivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, assert_problem, start_server, storage_settings
from tests.receivers import Receiver
from vimkit.app import build_services
from vimkit.auth.principal import Principal
from vimkit.config import Settings
from vimkit.drivers.specs import ComputeSpec
from vimkit.models.storage import StorageAllocateRequest

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def svim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", database_url, **storage_settings(tmp_path))
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


def volume(api: httpx.Client, size: int = 10, type_: str = "volume", expect: int = 201, **extra: object) -> dict:
    storage_data = {"typeOfStorage": type_, "sizeOfStorage": size}
    storage_data.update(extra.pop("storage_data", {}))  # type: ignore[arg-type]
    response = api.post("/storage/v1/storages", json={"storageData": storage_data, **extra})
    assert response.status_code == expect, response.text
    return response.json()


def capacity(api: httpx.Client, **params: str) -> dict:
    response = api.get("/storage-info/v1/capacity", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# --------------------------------------------------------------------------- allocate / query


def test_allocate_query_and_terminate(svim: RunningServer) -> None:
    with svim.client() as api:
        created = api.post("/storage/v1/storages", json={
            "storageName": "data-1", "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10},
            "metadata": [{"key": "app", "value": "db"}], "reservationId": "r-1",
        })
        assert created.status_code == 201, created.text
        body = created.json()
        assert created.headers["location"] == body["_links"]["self"]["href"]
        assert body["storageName"] == "data-1" and body["sizeOfStorage"] == 10 and body["typeOfStorage"] == "volume"
        assert body["provisioningState"] == "ALLOCATED" and body["operationalState"] == "ENABLED"
        assert body["zoneId"] in ("zone-a", "zone-b") and body["poolId"].startswith("pool-")
        assert "ownerId" not in body and "hostId" not in body and body["metadata"] == {"app": "db"}
        storage_id = body["storageId"]

        got = api.get(f"/storage/v1/storages/{storage_id}")
        assert got.status_code == 200 and got.json() == body and got.headers["etag"] == created.headers["etag"]
        assert api.get(f"/storage/v1/storages/{storage_id}", headers={"If-None-Match": got.headers["etag"]}).status_code == 304
        other = volume(api, 5)
        listed = api.get("/storage/v1/storages", params={"filter": "(eq,metadata/app,db)"}).json()
        assert [v["storageId"] for v in listed] == [storage_id]
        listed = api.get("/storage/v1/storages", params={"filter": f"(in,storageId,{storage_id},{other['storageId']})"})
        assert {v["storageId"] for v in listed.json()} == {storage_id, other["storageId"]}
        assert_problem(api.get("/storage/v1/storages", params={"filter": "(eq,nope,1)"}), 400, "filter")

        assert_problem(api.delete(f"/storage/v1/storages/{storage_id}", headers={"If-Match": '"stale"'}), 412)
        assert api.delete(f"/storage/v1/storages/{storage_id}", headers={"If-Match": got.headers["etag"]}).status_code == 204
        assert_problem(api.get(f"/storage/v1/storages/{storage_id}"), 404)
        assert_problem(api.delete(f"/storage/v1/storages/{storage_id}"), 404)
        assert capacity(api)["allocatedGb"] == 5


@pytest.mark.parametrize(("storage_data", "name"), [
    ({"typeOfStorage": "volume", "sizeOfStorage": "10"}, "storageData/sizeOfStorage"),
    ({"typeOfStorage": "volume", "sizeOfStorage": 1.5}, "storageData/sizeOfStorage"),
    ({"typeOfStorage": "volume", "sizeOfStorage": 0}, "storageData/sizeOfStorage"),
    ({"typeOfStorage": "volume", "sizeOfStorage": True}, "storageData/sizeOfStorage"),
    ({"typeOfStorage": "volume", "sizeOfStorage": 1, "rdmaEnabled": "yes"}, "storageData/rdmaEnabled"),
    ({"typeOfStorage": "volume", "sizeOfStorage": 1, "colour": "red"}, "storageData/colour"),
    ({"typeOfStorage": "tape", "sizeOfStorage": 1}, "storageData/typeOfStorage"),
])
def test_invalid_allocations(svim: RunningServer, storage_data: dict, name: str) -> None:
    with svim.client() as api:
        assert_problem(api.post("/storage/v1/storages", json={"storageData": storage_data}), 400, name)
        assert api.get("/storage/v1/storages").json() == []


def test_location_and_resource_group_checks(svim: RunningServer) -> None:
    with svim.client() as admin:
        assert_problem(admin.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "locationConstraints": {"zoneId": "zone-x"}}), 400, "locationConstraints/zoneId")
        assert_problem(admin.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "locationConstraints": {"poolId": "pool-x"}}), 400, "locationConstraints/poolId")
        named = volume(admin, 1, resourceGroupId="rg-elsewhere")  # an admin may name any group
        assert named["resourceGroupId"] == "rg-elsewhere"
    consumer = svim.new_consumer()
    with consumer.client() as api:
        body = assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}, "resourceGroupId": "rg-elsewhere"}), 403)
        assert body["cause"] == "FORBIDDEN"
        assert volume(api, 1, resourceGroupId=consumer.resource_group_id)["resourceGroupId"] == consumer.resource_group_id


def test_placement_by_type_zone_rdma_and_multi_attach(svim: RunningServer) -> None:
    with svim.client() as api:
        assert volume(api, 10, "ssd")["poolId"] == "pool-ssd"
        assert volume(api, 10, storage_data={"rdmaEnabled": True})["poolId"] == "pool-b"
        assert volume(api, 10, storage_data={"multiAttach": True})["poolId"] == "pool-a2"
        in_a = volume(api, 10, locationConstraints={"zoneId": "zone-a"})
        assert in_a["zoneId"] == "zone-a" and in_a["poolId"] in ("pool-a1", "pool-a2")
        assert volume(api, 10, locationConstraints={"poolId": "pool-a1"})["poolId"] == "pool-a1"
        body = assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "ssd", "sizeOfStorage": 1, "rdmaEnabled": True}}), 409)
        assert body["cause"] == "NO_CAPACITY"
        types = api.get("/storage-info/v1/resource_types").json()
        assert {t["storageResourceTypeId"] for t in types} == {"volume", "ssd"}
        ssd = next(t for t in types if t["typeOfStorage"] == "ssd")
        assert ssd["zoneIds"] == ["zone-b"] and ssd["sizeOfStorage"] == 40 and ssd["rdmaSupported"] is False
        assert [t["typeOfStorage"] for t in api.get("/storage-info/v1/resource_types", params={"zoneId": "zone-a"}).json()] == ["volume"]
        assert_problem(api.get("/storage-info/v1/resource_types", params={"zoneId": "zone-x"}), 400, "zoneId")
        assert_problem(api.get("/storage-info/v1/capacity", params={"resourceTypeId": "tape"}), 400, "resourceTypeId")


def test_capacity_is_never_oversubscribed_and_matches_allocation(svim: RunningServer) -> None:
    with svim.client() as api:
        zone_a = capacity(api, zoneId="zone-a", resourceTypeId="volume")
        assert zone_a["totalGb"] == 250 and zone_a["availableGb"] == 250 and zone_a["largestAvailableGb"] == 150
        # pool-a1 allows 150 GB (100 × 1.5): a 150 GB volume fits, 151 GB does not, anywhere in zone-a.
        body = assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 151},
            "locationConstraints": {"zoneId": "zone-a"}}), 409)
        assert body["cause"] == "NO_CAPACITY" and body["retryable"] is True
        big = volume(api, 150, locationConstraints={"zoneId": "zone-a"})
        assert big["poolId"] == "pool-a1"
        zone_a = capacity(api, zoneId="zone-a", resourceTypeId="volume")
        assert zone_a["allocatedGb"] == 150 and zone_a["availableGb"] == 100 and zone_a["largestAvailableGb"] == 100
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "locationConstraints": {"poolId": "pool-a1"}}), 409)
        volume(api, 100, locationConstraints={"zoneId": "zone-a"})
        assert capacity(api, zoneId="zone-a")["availableGb"] == 0
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "locationConstraints": {"zoneId": "zone-a"}}), 409)
        for usage in (capacity(api, zoneId=z) for z in ("zone-a", "zone-b")):
            assert usage["allocatedGb"] <= usage["totalGb"]


def test_capacity_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vimkit.db'}"
    server = start_server(tmp_path / "data", url, **storage_settings(tmp_path))
    try:
        with server.client() as api:
            kept = volume(api, 40, locationConstraints={"poolId": "pool-b"})
            before = capacity(api, zoneId="zone-b", resourceTypeId="volume")
    finally:
        server.stop()
    server = start_server(tmp_path / "data", url, **storage_settings(tmp_path))
    try:
        with server.client() as api:
            assert capacity(api, zoneId="zone-b", resourceTypeId="volume") == before
            assert api.get(f"/storage/v1/storages/{kept['storageId']}").json()["poolId"] == "pool-b"
            assert api.delete(f"/storage/v1/storages/{kept['storageId']}").status_code == 204
            assert capacity(api, zoneId="zone-b", resourceTypeId="volume")["allocatedGb"] == 0
    finally:
        server.stop()


# --------------------------------------------------------------------------- affinity


def test_affinity_rules_and_groups(svim: RunningServer) -> None:
    with svim.client() as api:
        first = volume(api, 10, locationConstraints={"poolId": "pool-a1"})
        anti = volume(api, 10, affinityOrAntiAffinityConstraints=[{
            "type": "ANTI_AFFINITY", "scope": "NFVI_NODE",
            "affinityOrAntiAffinityResourceList": {"resource": [first["storageId"]]}}])
        assert anti["poolId"] != "pool-a1"
        near = volume(api, 10, affinityOrAntiAffinityConstraints=[{
            "type": "AFFINITY", "scope": "ZONE",
            "affinityOrAntiAffinityResourceList": {"resource": [first["storageId"]]}}])
        assert near["zoneId"] == "zone-a"
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
            "affinityOrAntiAffinityConstraints": [{"type": "AFFINITY"}]}), 400)

        group = api.post("/storage/v1/affinity_groups", json={"type": "ANTI_AFFINITY", "scope": "ZONE",
                                                               "affinityGroupName": "spread"})
        assert group.status_code == 201, group.text
        group_id = group.json()["groupId"]
        assert api.get(f"/storage/v1/affinity_groups/{group_id}").json()["scope"] == "ZONE"
        assert group_id in [g["groupId"] for g in api.get("/storage/v1/affinity_groups").json()]
        rule = [{"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]
        zones = {volume(api, 5, affinityOrAntiAffinityConstraints=rule)["zoneId"] for _ in range(2)}
        assert zones == {"zone-a", "zone-b"}
        body = assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 5},
            "affinityOrAntiAffinityConstraints": rule}), 409)
        assert body["cause"] == "AFFINITY_UNSATISFIABLE"
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 5},
            "affinityOrAntiAffinityConstraints": [{"type": "AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]}),
            400)
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 5},
            "affinityOrAntiAffinityConstraints": [{"type": "ANTI_AFFINITY",
                                                   "affinityOrAntiAffinityResourceGroupId": "no-such-group"}]}), 400)
        assert_problem(api.delete(f"/storage/v1/affinity_groups/{group_id}"), 409)
        members = [v["storageId"] for v in api.get("/storage/v1/storages").json()
                   if v["affinityOrAntiAffinityConstraints"][:1] and
                   v["affinityOrAntiAffinityConstraints"][0].get("affinityOrAntiAffinityResourceGroupId") == group_id]
        assert api.post("/storage/v1/terminate", json={"storageId": members}).json() == {"storageId": members}
        assert api.delete(f"/storage/v1/affinity_groups/{group_id}").status_code == 204
        assert_problem(api.get(f"/storage/v1/affinity_groups/{group_id}"), 404)


def test_another_groups_volume_does_not_constrain_placement(svim: RunningServer) -> None:
    owner, other = svim.new_consumer(), svim.new_consumer()
    with owner.client() as a, other.client() as b:
        theirs = volume(a, 10, locationConstraints={"poolId": "pool-b"})
        mine = volume(b, 10, locationConstraints={"zoneId": "zone-b"}, affinityOrAntiAffinityConstraints=[{
            "type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceList": {"resource": [theirs["storageId"]]}}])
        assert mine["poolId"] == "pool-b"  # the foreign id is ignored, as an unknown one is


# --------------------------------------------------------------------------- update / scale / migrate


def test_update_scale_and_migrate(svim: RunningServer) -> None:
    with svim.client() as api:
        body = volume(api, 10, locationConstraints={"poolId": "pool-a1"}, metadata={"a": "1", "b": "2"})
        url = f"/storage/v1/storages/{body['storageId']}"
        etag = api.get(url).headers["etag"]
        patched = api.patch(url, json={"storageName": "renamed", "metadata": {"a": None, "c": "3"}},
                            headers={**MERGE, "If-Match": etag})
        assert patched.status_code == 200, patched.text
        assert patched.json()["storageName"] == "renamed" and patched.json()["metadata"] == {"b": "2", "c": "3"}
        assert patched.headers["etag"] != etag
        assert_problem(api.patch(url, json={"metadata": {"x": "y"}}, headers={**MERGE, "If-Match": etag}), 412)
        assert_problem(api.patch(url, json={"updateStorageData": {"typeOfStorage": "ssd"}}, headers=MERGE),
                       400, "updateStorageData/typeOfStorage")
        assert_problem(api.patch(url, json={"updateStorageData": {"sizeOfStorage": 5}}, headers=MERGE),
                       400, "updateStorageData/sizeOfStorage")
        grown = api.patch(url, json={"updateStorageData": {"sizeOfStorage": 20}}, headers=MERGE)
        assert grown.status_code == 200 and grown.json()["sizeOfStorage"] == 20
        assert_problem(api.patch(url, json={"bogus": 1}, headers=MERGE), 400)

        assert_problem(api.post(f"{url}/scale", json={"sizeOfStorage": 10}), 400, "sizeOfStorage")
        assert_problem(api.post(f"{url}/scale", json={"sizeOfStorage": 20}), 400, "sizeOfStorage")
        assert_problem(api.post(f"{url}/scale", json={"sizeOfStorage": "30"}), 400, "sizeOfStorage")
        scaled = api.post(f"{url}/scale", json={"sizeOfStorage": 30})
        assert scaled.status_code == 200 and scaled.json()["sizeOfStorage"] == 30
        assert capacity(api, zoneId="zone-a")["allocatedGb"] == 30
        body = assert_problem(api.post(f"{url}/scale", json={"sizeOfStorage": 151}), 409)
        assert body["cause"] == "NO_CAPACITY"
        assert api.get(url).json()["sizeOfStorage"] == 30

        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"poolId": "pool-a1"}}), 409)
        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"poolId": "pool-ssd"}}), 409)
        # The backend's copy fails: the volume and both pools' capacity are as they were.
        driver = svim.services.infrastructure.driver
        driver.fail_next("migrate_volume", code="BACKEND_UNAVAILABLE")
        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"zoneId": "zone-b"}}), 503)
        assert api.get(url).json()["poolId"] == "pool-a1"
        assert capacity(api, zoneId="zone-a")["allocatedGb"] == 30
        assert capacity(api, zoneId="zone-b", resourceTypeId="volume")["allocatedGb"] == 0
        moved = api.post(f"{url}/migrate", json={"migrationConstraint": {"zoneId": "zone-b"}})
        assert moved.status_code == 200, moved.text
        assert moved.json()["poolId"] == "pool-b" and moved.json()["zoneId"] == "zone-b"
        backend = {v.volume_id: v.pool_id for v in asyncio.run(driver.list_volumes())}
        assert backend[moved.json()["storageId"]] == "pool-b"
        assert capacity(api, zoneId="zone-a")["allocatedGb"] == 0
        assert capacity(api, zoneId="zone-b", resourceTypeId="volume")["allocatedGb"] == 30
        assert_problem(api.post(f"{url}/migrate", json={"migrationConstraint": {"zoneId": "zone-x"}}), 400)


# --------------------------------------------------------------------------- snapshots, terminate


def test_snapshots_and_volumes_from_them(svim: RunningServer) -> None:
    with svim.client() as api:
        source = volume(api, 10)
        url = f"/storage/v1/storages/{source['storageId']}"
        made = api.post(f"{url}/operate", json={"storageOperation": "CREATE_SNAPSHOT",
                                                "storageOperationInputData": {"snapshotName": "nightly"}})
        assert made.status_code == 200, made.text
        output = made.json()["storageOperationOutputData"]
        snapshot_id = output["snapshotId"]
        assert output["sizeOfStorage"] == 10 and output["snapshotName"] == "nightly"
        assert [s["snapshotId"] for s in made.json()["snapshots"]] == [snapshot_id]

        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 5}, "sourceSnapshotId": snapshot_id}),
            400, "storageData/sizeOfStorage")
        assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10}, "sourceSnapshotId": "nope"}),
            400, "sourceSnapshotId")
        clone = volume(api, 12, sourceSnapshotId=snapshot_id)
        assert clone["sourceSnapshotId"] == snapshot_id and clone["sizeOfStorage"] == 12
        other = svim.new_consumer()
        with other.client() as stranger:  # another group cannot use the snapshot
            assert_problem(stranger.post("/storage/v1/storages", json={
                "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10}, "sourceSnapshotId": snapshot_id}),
                400, "sourceSnapshotId")

        assert_problem(api.delete(url), 409)  # it has a snapshot
        assert_problem(api.post(f"{url}/operate", json={"storageOperation": "DELETE_SNAPSHOT"}), 400,
                       "storageOperationInputData/snapshotId")
        assert_problem(api.post(f"{url}/operate", json={"storageOperation": "DELETE_SNAPSHOT",
                                                        "storageOperationInputData": {"snapshotId": "nope"}}), 400)
        assert_problem(api.post(f"{url}/operate", json={"storageOperation": "REBOOT"}), 400, "storageOperation")
        deleted = api.post(f"{url}/operate", json={"storageOperation": "DELETE_SNAPSHOT",
                                                   "storageOperationInputData": {"snapshotId": snapshot_id}})
        assert deleted.status_code == 200 and deleted.json()["snapshots"] == []
        assert api.delete(url).status_code == 204
        assert api.get(f"/storage/v1/storages/{clone['storageId']}").status_code == 200


def test_batch_terminate_is_best_effort(svim: RunningServer) -> None:
    with svim.client() as api:
        a, b, c = (volume(api, 1)["storageId"] for _ in range(3))
        snapshotted = api.post(f"/storage/v1/storages/{c}/operate", json={"storageOperation": "CREATE_SNAPSHOT"})
        assert snapshotted.status_code == 200
        with svim.new_consumer().client() as stranger:  # another group's volumes are not found
            assert stranger.post("/storage/v1/terminate", json={"storageId": [a, b]}).json() == {"storageId": []}
        done = api.post("/storage/v1/terminate", json={"storageId": [a, "no-such", b, c]})
        assert done.status_code == 200 and done.json() == {"storageId": [a, b]}
        assert [v["storageId"] for v in api.get("/storage/v1/storages").json()] == [c]
        assert_problem(api.post("/storage/v1/terminate", json={"storageId": []}), 400)


# --------------------------------------------------------------------------- failures


def test_a_failed_allocation_releases_its_claim(svim: RunningServer) -> None:
    driver = svim.services.infrastructure.driver  # type: ignore[attr-defined]
    with svim.client() as api:
        before = capacity(api)
        driver.fail_next("create_volume")
        body = assert_problem(api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 50}}), 500)
        assert body["cause"] == "INTERNAL"
        driver.fail_next("create_volume", code="BACKEND_UNAVAILABLE", retryable=True)
        response = api.post("/storage/v1/storages", json={"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 50}})
        assert_problem(response, 503)
        assert response.headers["retry-after"]
        assert capacity(api) == before
        assert api.get("/storage/v1/storages").json() == []
        assert svim.services.infrastructure.storage.claims() == []  # type: ignore[attr-defined]


def test_a_failed_transaction_deletes_the_backend_volume(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}", **storage_settings(tmp_path))
    try:
        service = server.services.storage  # type: ignore[attr-defined]
        driver = server.services.infrastructure.driver  # type: ignore[attr-defined]

        def broken(*args: object) -> None:
            raise RuntimeError("database went away")

        service._insert = broken
        with server.client() as api:
            before = capacity(api)
        with server.client() as api:  # the server closes the connection of an unexpected error
            assert_problem(api.post("/storage/v1/storages", json={
                "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 30}}), 500)
        with server.client() as api:
            assert capacity(api) == before
            assert driver._state.volumes == {}
            del service._insert
            assert volume(api, 30)["sizeOfStorage"] == 30
    finally:
        server.stop()


def test_storage_failure_disables_the_volume_and_notifies(svim: RunningServer, receiver: Receiver) -> None:
    with svim.client() as api:
        subscribed = api.post("/storage/v1/subscriptions", json={"callbackUri": receiver.url})
        assert subscribed.status_code == 201, subscribed.text
        info = Receiver().start()
        try:
            assert api.post("/storage-info/v1/subscriptions", json={"callbackUri": info.url}).status_code == 201
            victim = volume(api, 10, locationConstraints={"poolId": "pool-a1"})
            url = f"/storage/v1/storages/{victim['storageId']}"
            fault = api.post("/admin/v1/faults", json={"kind": "STORAGE_FAILURE", "targetId": victim["storageId"]})
            assert fault.status_code == 201, fault.text
            failed = wait_for(lambda: api.get(url).json()["operationalState"] == "DISABLED" and api.get(url).json())
            assert failed and failed["provisioningState"] == "ALLOCATED"
            assert failed["error"]["cause"] == "BACKEND_UNAVAILABLE" and failed["error"]["status"] == 503
            notes = receiver.wait_for(2)
            assert [(n["changeType"], n["virtualisedResourceId"]) for n in notes] == [
                ("ADDED", victim["storageId"]), ("FAILED", victim["storageId"])]
            assert notes[1]["changedResourceData"]["operationalState"] == "DISABLED"
            assert notes[1]["resourceType"] == "STORAGE" and notes[1]["notificationType"] == "VirtualisedResourceChangeNotification"

            assert api.delete(f"/admin/v1/faults/{fault.json()['id']}").status_code == 204
            recovered = wait_for(lambda: api.get(url).json()["operationalState"] == "ENABLED" and api.get(url).json())
            assert recovered and "error" not in recovered
            assert receiver.wait_for(3)[2]["changeType"] == "MODIFIED"

            # A failed pool: its volumes fail, no new volume goes there, storage-info subscribers hear it.
            pool_fault = api.post("/admin/v1/faults", json={"kind": "STORAGE_FAILURE", "targetId": "pool-a1"})
            assert pool_fault.status_code == 201
            assert wait_for(lambda: api.get(url).json()["operationalState"] == "DISABLED")
            update = info.wait_for(1)[0]
            assert update["notificationType"] == "InformationChangeNotification"
            assert update["changeType"] == "UPDATE" and update["resourceTypeId"] == "volume"
            zone_a = capacity(api, zoneId="zone-a", resourceTypeId="volume")
            assert zone_a["unavailableGb"] == 140 and zone_a["availableGb"] == 100
            assert volume(api, 10, locationConstraints={"zoneId": "zone-a"})["poolId"] == "pool-a2"
            assert_problem(api.post("/storage/v1/storages", json={
                "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1},
                "locationConstraints": {"poolId": "pool-a1"}}), 409)
            assert api.delete(f"/admin/v1/faults/{pool_fault.json()['id']}").status_code == 204
            assert wait_for(lambda: api.get(url).json()["operationalState"] == "ENABLED")
            assert wait_for(lambda: capacity(api, zoneId="zone-a", resourceTypeId="volume")["unavailableGb"] == 0)
        finally:
            info.stop()


def test_change_notifications_reach_a_real_receiver(svim: RunningServer, receiver: Receiver) -> None:
    owner = svim.new_consumer()
    with owner.client() as api:
        subscribed = api.post("/storage/v1/subscriptions", json={
            "callbackUri": receiver.url, "filter": {"metadata": {"team": "blue"}}})
        assert subscribed.status_code == 201, subscribed.text
        volume(api, 1, metadata={"team": "red"})
        blue = volume(api, 1, metadata={"team": "blue"})
        url = f"/storage/v1/storages/{blue['storageId']}"
        assert api.post(f"{url}/scale", json={"sizeOfStorage": 2}).status_code == 200
        assert api.patch(url, json={"storageName": "x"}, headers=MERGE).status_code == 200
        assert api.delete(url).status_code == 204
        notes = receiver.wait_for(4)
        assert [n["changeType"] for n in notes] == ["ADDED", "MODIFIED", "MODIFIED", "REMOVED"]
        assert {n["virtualisedResourceId"] for n in notes} == {blue["storageId"]}
        assert [n["sequence"] for n in notes] == [1, 2, 3, 4]
        assert notes[1]["changedResourceData"]["sizeOfStorage"] == 2
        assert all(n["vimId"] and n["subscriptionId"] == subscribed.json()["id"] for n in notes)
    other = svim.new_consumer()
    with other.client() as api:
        volume(api, 1, metadata={"team": "blue"})  # another group: not delivered to the owner
    time.sleep(0.5)
    assert len(receiver.notifications) == 4


# --------------------------------------------------------------------------- attach / detach (service level)


def _principal(group: str = "rg-test") -> Principal:
    return Principal("consumer-test", group, frozenset({"storage:read", "storage:write"}))


def test_attach_and_detach_at_service_level(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'v.db'}",
                        log_level="warning", **storage_settings(tmp_path))  # type: ignore[arg-type]
    services = build_services(settings)
    storage, driver = services.storage, services.infrastructure.driver  # type: ignore[union-attr]
    me, stranger = _principal(), _principal("rg-other")

    async def scenario() -> None:
        for compute_id in ("vm-1", "vm-2", "vm-3"):
            await driver.create_compute(ComputeSpec(compute_id, compute_id, "host-a1", "zone-a", 1, 512, 1))

        def allocate(**storage_data: object):  # type: ignore[no-untyped-def]
            data = {"typeOfStorage": "volume", "sizeOfStorage": 5, **storage_data}
            return storage.allocate(me, StorageAllocateRequest.model_validate({"storageData": data}))

        single = await allocate()
        shared = await allocate(multiAttach=True)
        assert shared.body["poolId"] == "pool-a2"

        attached = await storage.attach(me, single.id, "vm-1", "host-a1")
        assert attached.body["ownerId"] == "vm-1"
        assert attached.body["attachments"][0]["hostId"] == "host-a1" and attached.body["attachments"][0]["device"]
        for compute_id in ("vm-1", "vm-2"):  # attached and not multi-attach: 409
            with pytest.raises(Exception) as refused:
                await storage.attach(me, single.id, compute_id)
            assert getattr(refused.value, "status", None) == 409
        with pytest.raises(Exception) as refused:
            await storage.delete(me, single.id, None)
        assert getattr(refused.value, "status", None) == 409
        with pytest.raises(Exception) as hidden:
            await storage.attach(stranger, single.id, "vm-2")
        assert getattr(hidden.value, "status", None) == 404

        first = await storage.attach(me, shared.id, "vm-1")
        second = await storage.attach(me, shared.id, "vm-2")
        assert first.body["ownerId"] == "vm-1" and second.body["ownerId"] == "vm-1"
        assert [a["computeId"] for a in second.body["attachments"]] == ["vm-1", "vm-2"]
        after = await storage.detach(me, shared.id, "vm-1")
        assert after.body["ownerId"] == "vm-2"
        with pytest.raises(Exception) as refused:
            await storage.detach(me, shared.id, "vm-1")
        assert getattr(refused.value, "status", None) == 409

        # A driver failure leaves the volume unattached.
        driver.fail_next("attach_volume")
        with pytest.raises(Exception):
            await storage.attach(me, shared.id, "vm-3")
        assert "vm-3" not in [a["computeId"] for a in storage.get(me, shared.id).body["attachments"]]

        # realise=False records an attachment the compute service made at boot.
        recorded = await storage.attach(me, shared.id, "vm-3", "host-a1", realise=False)
        assert [a["computeId"] for a in recorded.body["attachments"]] == ["vm-2", "vm-3"]

        detached = await storage.detach(me, single.id, "vm-1")
        assert "ownerId" not in detached.body and detached.body["attachments"] == []
        await storage.delete(me, single.id, None)
        await storage.detach(me, shared.id, "vm-2")
        await storage.detach(me, shared.id, "vm-3", realise=False)
        await storage.delete(me, shared.id, None)
        assert services.infrastructure.storage.claims() == []  # type: ignore[union-attr]

    try:
        asyncio.run(scenario())
    finally:
        services.close()

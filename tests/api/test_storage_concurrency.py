"""Pool capacity under concurrent requests: never beyond ``capacityGb × allocationRatio``.

Uses ``STORAGE_INVENTORY`` (zone-a: pool-a1 allocates 150 GB, pool-a2 100 GB; zone-b: pool-b
100 GB), on SQLite and PostgreSQL, with many HTTP clients at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, storage_settings
from vimkit.app import build_services
from vimkit.api.problems import ApiError
from vimkit.auth.principal import Principal
from vimkit.config import Settings
from vimkit.drivers.specs import ComputeSpec
from vimkit.models.storage import StorageAllocateRequest

ALLOCATABLE = {"pool-a1": 150, "pool-a2": 100, "pool-b": 100, "pool-ssd": 50}


@pytest.fixture
def svim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", database_url, **storage_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()


def _in_parallel(server: RunningServer, calls: list, workers: int = 16) -> list[httpx.Response]:  # type: ignore[type-arg]
    token = server.token()

    def run(call):  # type: ignore[no-untyped-def]
        with server.client(token) as api:
            return call(api)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, calls))


def _pool_usage(api: httpx.Client) -> Counter[str]:
    used: Counter[str] = Counter()
    for item in api.get("/storage/v1/storages").json():
        used[item["poolId"]] += item["sizeOfStorage"]
    return used


def test_concurrent_allocations_never_oversubscribe(svim: RunningServer) -> None:
    body = {"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 20}, "locationConstraints": {"zoneId": "zone-a"}}
    responses = _in_parallel(svim, [lambda api: api.post("/storage/v1/storages", json=body)] * 30)
    statuses = Counter(r.status_code for r in responses)
    # pool-a1: 7 × 20 = 140 ≤ 150; pool-a2: 5 × 20 = 100.
    assert statuses == {201: 12, 409: 18}, statuses
    assert {r.json()["cause"] for r in responses if r.status_code == 409} == {"NO_CAPACITY"}
    with svim.client() as api:
        used = _pool_usage(api)
        assert all(used[pool] <= ALLOCATABLE[pool] for pool in used), used
        capacity = api.get("/storage-info/v1/capacity", params={"zoneId": "zone-a", "resourceTypeId": "volume"}).json()
        assert capacity["allocatedGb"] == sum(used.values()) == 240
        assert capacity["availableGb"] == 10 and capacity["largestAvailableGb"] == 10


def test_concurrent_growth_never_oversubscribes(svim: RunningServer) -> None:
    with svim.client() as api:
        ids = []
        for _ in range(5):
            created = api.post("/storage/v1/storages", json={
                "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10}, "locationConstraints": {"poolId": "pool-b"}})
            assert created.status_code == 201, created.text
            ids.append(created.json()["storageId"])
    calls = [lambda api, i=i: api.post(f"/storage/v1/storages/{i}/scale", json={"sizeOfStorage": 30}) for i in ids]
    statuses = Counter(r.status_code for r in _in_parallel(svim, calls))
    assert statuses == {200: 2, 409: 3}, statuses  # 50 GB free: two volumes grow by 20 GB each
    with svim.client() as api:
        assert _pool_usage(api)["pool-b"] == 90
        capacity = api.get("/storage-info/v1/capacity", params={"zoneId": "zone-b", "resourceTypeId": "volume"}).json()
        assert capacity["allocatedGb"] == 90


def test_concurrent_allocations_and_deletions_keep_capacity_exact(svim: RunningServer) -> None:
    with svim.client() as api:
        doomed = [api.post("/storage/v1/storages", json={
            "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10},
            "locationConstraints": {"zoneId": "zone-b"}}).json()["storageId"] for _ in range(8)]
    body = {"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 10}, "locationConstraints": {"zoneId": "zone-b"}}
    calls = [lambda api, i=i: api.delete(f"/storage/v1/storages/{i}") for i in doomed]
    calls += [lambda api: api.post("/storage/v1/storages", json=body)] * 12
    responses = _in_parallel(svim, calls)
    assert all(r.status_code in (201, 204, 409) for r in responses), [r.text for r in responses]
    assert sum(r.status_code == 204 for r in responses) == 8
    with svim.client() as api:
        used = _pool_usage(api)
        assert used["pool-b"] <= 100
        capacity = api.get("/storage-info/v1/capacity", params={"zoneId": "zone-b", "resourceTypeId": "volume"}).json()
        assert capacity["allocatedGb"] == used["pool-b"]
        listed = sorted(item["storageId"] for item in api.get("/storage/v1/storages").json())
    claims = svim.services.infrastructure.storage.claims()  # type: ignore[attr-defined]
    assert sorted(claim.resource_id for claim in claims) == listed


def test_concurrent_attaches_of_a_single_attach_volume(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'v.db'}",
                        log_level="warning", **storage_settings(tmp_path))  # type: ignore[arg-type]
    services = build_services(settings)
    storage, driver = services.storage, services.infrastructure.driver  # type: ignore[union-attr]
    me = Principal("consumer-test", "rg-test", frozenset({"storage:read", "storage:write"}))

    async def scenario() -> None:
        computes = [f"vm-{n}" for n in range(6)]
        for compute_id in computes:
            await driver.create_compute(ComputeSpec(compute_id, compute_id, "host-a1", "zone-a", 1, 512, 1))
        volume = await storage.allocate(me, StorageAllocateRequest.model_validate(
            {"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}}))
        results = await asyncio.gather(*(storage.attach(me, volume.id, c) for c in computes), return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1 and all(isinstance(r, ApiError) and r.status == 409 for r in losers), results
        final = storage.get(me, volume.id).body
        assert len(final["attachments"]) == 1 and final["ownerId"] == final["attachments"][0]["computeId"]

    try:
        asyncio.run(scenario())
    finally:
        services.close()


def test_an_attachment_recorded_for_a_boot_keeps_the_device_the_backend_named(tmp_path: Path) -> None:
    """What an allocation does with the volumes it boots a compute with: record the attachment
    first, then the device the backend named (or none, when it named none)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'v.db'}",
                        log_level="warning", **storage_settings(tmp_path))  # type: ignore[arg-type]
    services = build_services(settings)
    storage = services.storage  # type: ignore[union-attr]
    me = Principal("consumer-test", "rg-test", frozenset({"storage:read", "storage:write"}))

    async def scenario() -> None:
        named, unnamed = [await storage.allocate(me, StorageAllocateRequest.model_validate(
            {"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}})) for _ in range(2)]
        for volume in (named, unnamed):
            await storage.attach(me, volume.id, "vm-boot", "host-a1", realise=False)
        rows = await storage.record_devices("vm-boot", {named.id: "/dev/vdc", unnamed.id: None})
        assert rows[named.id].body["attachments"] == [{"computeId": "vm-boot", "hostId": "host-a1",
                                                       "device": "/dev/vdc"}]
        assert rows[unnamed.id].body["attachments"] == [{"computeId": "vm-boot", "hostId": "host-a1"}]
        assert storage.get(me, named.id).body["attachments"][0]["device"] == "/dev/vdc"
        with pytest.raises(ApiError) as refused:  # recorded as attached: no other compute takes it
            await storage.attach(me, unnamed.id, "vm-other", "host-a1")
        assert refused.value.status == 409

    try:
        asyncio.run(scenario())
    finally:
        services.close()

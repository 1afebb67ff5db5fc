"""Two replicas on one PostgreSQL database allocate from the same hosts concurrently: capacity
is never oversubscribed and anti-affinity holds across them (docs/compute.md, placement_sync.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.test_compute import WAIT, compute_settings
from tests.conftest import RunningServer, start_server

FLAVOUR_VCPUS = {"m1.tiny": 1, "m1.small": 1, "m1.medium": 2, "m1.large": 4}
# Replicas share a database server: PostgreSQL only (database_url is parametrized over both).
pytestmark = pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                                     indirect=True)


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    first = start_server(tmp_path / "one", database_url, replica_id="one", **compute_settings(tmp_path / "a"))
    second = start_server(tmp_path / "two", database_url, replica_id="two", **compute_settings(tmp_path / "b"))
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _clients(first: RunningServer, second: RunningServer) -> tuple[httpx.Client, httpx.Client, object]:
    consumer = first.new_consumer()
    token_two = second.token(consumer.client_id, consumer.client_secret)  # each replica signs its own tokens
    return consumer.client(), second.client(token_two), consumer


def _allocate_everywhere(clients: list[httpx.Client], bodies: list[dict]) -> list[httpx.Response]:
    def one(index: int) -> httpx.Response:
        return clients[index % len(clients)].post("/compute/v1/computes", json=bodies[index], headers=WAIT)
    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(one, range(len(bodies))))


def test_two_replicas_never_oversubscribe_a_host(replicas: tuple[RunningServer, RunningServer]) -> None:
    first, second = replicas
    one, two, _consumer = _clients(first, second)
    with one, two:
        responses = _allocate_everywhere([one, two], [{"computeFlavourId": "m1.medium"} for _ in range(24)])
        placed = [r.json() for r in responses if r.status_code == 201]
        assert len(placed) == 8, [r.text for r in responses if r.status_code != 201][:3]
        assert all(r.status_code == 201 or r.json()["cause"] == "NO_CAPACITY" for r in responses)
        used: dict[str, int] = defaultdict(int)
        for compute in one.get("/compute/v1/computes").json():
            used[compute["hostId"]] += FLAVOUR_VCPUS[compute["flavourId"]]
        assert len(used) == 4 and all(vcpus <= 4 for vcpus in used.values()), used
        # Capacity one replica frees is capacity the other can use.
        freed = placed[0]
        assert one.delete(f"/compute/v1/computes/{freed['computeId']}", headers=WAIT).status_code == 204
        again = two.post("/compute/v1/computes", json={"computeFlavourId": "m1.medium"}, headers=WAIT)
        assert again.status_code == 201, again.text
        assert again.json()["hostId"] == freed["hostId"]
        assert two.post("/compute/v1/computes", json={"computeFlavourId": "m1.tiny"},
                        headers=WAIT).json()["cause"] == "NO_CAPACITY"


def test_anti_affinity_holds_across_replicas(replicas: tuple[RunningServer, RunningServer]) -> None:
    first, second = replicas
    one, two, _consumer = _clients(first, second)
    with one, two:
        group_id = one.post("/compute/v1/affinity_groups", json={"type": "ANTI_AFFINITY"}).json()["groupId"]
        constraint = [{"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]
        responses = _allocate_everywhere([one, two], [{"computeFlavourId": "m1.tiny",
                                                       "affinityOrAntiAffinityConstraints": constraint}] * 12)
        placed = [r.json() for r in responses if r.status_code == 201]
        assert len(placed) == 4 and len({c["hostId"] for c in placed}) == 4
        assert {r.json()["cause"] for r in responses if r.status_code != 201} == {"AFFINITY_UNSATISFIABLE"}

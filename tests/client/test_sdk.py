"""The SDK (vimkit.client): retries, Idempotency-Key, tokens, paging, typed errors, Prefer: wait,
wait_until, the async client and the notification receiver.

Retries are exercised against a tiny stub HTTP server on 127.0.0.1 that answers what each test
scripts; everything else against a real vimkit server in a thread (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.api.test_compute import compute_settings
from tests.conftest import ADMIN_ID, ADMIN_SECRET, RunningServer, start_server
from vimkit.client import (
    AsyncClient,
    BackendUnavailable,
    Client,
    Conflict,
    InvalidInput,
    NoCapacity,
    NotFound,
    NotificationReceiver,
    RateLimited,
    TransportError,
    Unauthorized,
    WaitTimeout,
)


class Stub:
    """Answers scripted (status, headers, body) responses in order, then 200 {}; records requests."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
                if self.path == "/oauth2/token":
                    status, headers, document = 200, {}, {"access_token": f"t{len(stub.requests)}",
                                                          "token_type": "Bearer", "expires_in": 3600}
                else:
                    status, headers, document = stub.script.pop(0) if stub.script else (200, {}, {})
                data = json.dumps(document).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def api_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] != "/oauth2/token"]


def problem(status: int, cause: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"urn:vimkit:problem:{cause.lower()}", "title": "x", "status": status, "detail": f"{cause} here",
            "cause": cause, "retryable": True, **extra}


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.httpd.shutdown()


def test_retries_503_and_429_honouring_retry_after(stub: Stub) -> None:
    slept: list[float] = []
    stub.script = [(503, {"Retry-After": "2"}, problem(503, "BACKEND_UNAVAILABLE")),
                   (429, {"Retry-After": "1"}, problem(429, "RATE_LIMITED")),
                   (200, {}, [{"flavourId": "f"}])]
    with Client(stub.url, "id", "secret", sleep=slept.append) as vim:
        assert vim.request("GET", "/compute/v1/flavours") == [{"flavourId": "f"}]
    assert slept == [2.0, 1.0]
    assert len(stub.api_requests()) == 3


def test_retries_are_bounded_and_end_in_a_typed_error(stub: Stub) -> None:
    slept: list[float] = []
    stub.script = [(503, {"Retry-After": "1"}, problem(503, "BACKEND_UNAVAILABLE"))] * 10
    with Client(stub.url, "id", "secret", max_retries=3, sleep=slept.append) as vim:
        with pytest.raises(BackendUnavailable) as caught:
            vim.request("GET", "/compute/v1/flavours")
    assert slept == [1.0, 1.0, 1.0] and caught.value.status == 503 and caught.value.cause == "BACKEND_UNAVAILABLE"
    # The total sleep is bounded too: a Retry-After beyond it is not waited for.
    stub.script = [(429, {"Retry-After": "120"}, problem(429, "RATE_LIMITED"))]
    slept.clear()
    with Client(stub.url, "id", "secret", max_retry_delay=30, sleep=slept.append) as vim:
        with pytest.raises(RateLimited):
            vim.request("GET", "/compute/v1/flavours")
    assert slept == []


def test_every_post_has_an_idempotency_key_kept_across_retries(stub: Stub) -> None:
    stub.script = [(503, {"Retry-After": "0"}, problem(503, "BACKEND_UNAVAILABLE")),
                   (201, {}, {"id": "s1", "callbackUri": "http://x"}),
                   (201, {}, {"id": "s2", "callbackUri": "http://x"})]
    with Client(stub.url, "id", "secret", sleep=lambda _: None) as vim:
        vim.subscriptions("compute").create({"callbackUri": "http://x"})
        vim.subscriptions("compute").create({"callbackUri": "http://x"}, idempotency_key="mine")
        vim.request("GET", "/compute/v1/computes")
    keys = [r["headers"].get("Idempotency-Key") for r in stub.api_requests()]
    assert keys[0] and keys[0] == keys[1] and keys[2] == "mine" and keys[3] is None


def test_a_409_while_the_first_request_runs_is_retried_with_the_same_key(stub: Stub) -> None:
    stub.script = [(409, {"Retry-After": "1"}, problem(409, "CONFLICT")), (201, {}, {"id": "s", "callbackUri": "u"})]
    slept: list[float] = []
    with Client(stub.url, "id", "secret", sleep=slept.append) as vim:
        assert vim.subscriptions("faults").create({"callbackUri": "u"}).id == "s"
    first, second = stub.api_requests()
    assert slept == [1.0] and first["headers"]["Idempotency-Key"] == second["headers"]["Idempotency-Key"]
    # A 409 without Retry-After is the resource's state: raised at once.
    stub.script = [(409, {}, problem(409, "CONFLICT"))]
    with Client(stub.url, "id", "secret", sleep=slept.append) as vim:
        with pytest.raises(Conflict):
            vim.subscriptions("faults").create({"callbackUri": "u"})


def test_unreachable_vim_is_a_transport_error() -> None:
    with Client("http://127.0.0.1:9", "id", "secret", max_retries=1, sleep=lambda _: None) as vim:
        with pytest.raises(TransportError):
            vim.request("GET", "/compute/v1/flavours")


def test_token_fetched_once_and_refreshed_after_a_401(stub: Stub) -> None:
    stub.script = [(200, {}, []), (401, {}, problem(401, "UNAUTHORIZED")), (200, {}, [])]
    with Client(stub.url, "id", "secret") as vim:
        vim.request("GET", "/a")
        vim.request("GET", "/b")
    tokens = [r for r in stub.requests if r["path"] == "/oauth2/token"]
    assert len(tokens) == 2 and tokens[0]["headers"]["Authorization"].startswith("Basic ")
    auth = [r["headers"]["Authorization"] for r in stub.api_requests()]
    assert auth[0] == auth[1] != auth[2]


# --------------------------------------------------------------------------- against a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("sdk")
    running = start_server(directory / "data", f"sqlite:///{directory / 'vimkit.db'}", page_size=3,
                           **compute_settings(directory))
    yield running
    running.stop()


@pytest.fixture
def vim(server: RunningServer) -> Iterator[Client]:
    with Client(server.base_url, ADMIN_ID, ADMIN_SECRET) as client:
        yield client


def test_paging_follows_link_next(vim: Client, server: RunningServer) -> None:
    flavours = list(vim.flavours.list())
    assert len(flavours) == 7 and len({f.flavourId for f in flavours}) == 7  # three pages of at most 3
    assert [f.flavourId for f in vim.flavours.list("(gte,virtualCpu/numVirtualCpu,4)")] == [
        "m1.large", "m1.xlarge", "c1.control-plane", "w1.worker"]
    raw = httpx.get(f"{server.base_url}/compute/v1/flavours", headers={"Authorization": f"Bearer {vim.token()}"})
    assert 'rel="next"' in raw.headers["Link"]


def test_idempotent_allocate_creates_one_compute(vim: Client) -> None:
    body = {"computeFlavourId": "m1.tiny", "metadata": {"test": "idempotent"}}
    first = vim.computes.allocate(body, wait=20, idempotency_key="same-allocation")
    again = vim.computes.allocate(body, idempotency_key="same-allocation")
    assert first.computeId == again.computeId
    assert len(list(vim.computes.list("(eq,metadata/test,idempotent)"))) == 1
    with pytest.raises(InvalidInput) as caught:  # same key, other body
        vim.computes.allocate({**body, "computeName": "other"}, idempotency_key="same-allocation")
    assert caught.value.status == 422
    vim.computes.terminate(first.computeId, wait=20)


def test_typed_errors_carry_the_problem(vim: Client) -> None:
    with pytest.raises(NotFound) as missing:
        vim.computes.get("no-such-compute")
    assert missing.value.status == 404 and missing.value.cause == "NOT_FOUND" and "no-such-compute" in missing.value.detail
    with pytest.raises(InvalidInput) as bad:
        vim.flavours.create({"flavourId": "bad", "virtualCpu": {"numVirtualCpu": 0}, "virtualMemory": {"virtualMemSize": 1}})
    assert bad.value.invalid_params[0].name == "virtualCpu/numVirtualCpu"
    assert bad.value.invalidParams == bad.value.invalid_params
    with pytest.raises(NoCapacity) as full:
        vim.computes.allocate({"computeFlavourId": "m1.xlarge"}, wait=10)
    assert full.value.cause == "NO_CAPACITY" and isinstance(full.value, Conflict)
    with pytest.raises(Unauthorized):
        Client(vim.base_url, ADMIN_ID, "wrong-secret").request("GET", "/compute/v1/flavours")


def test_prefer_wait_and_wait_until(vim: Client) -> None:
    compute = vim.computes.allocate({"computeFlavourId": "m1.tiny"})
    assert compute.provisioningState.value in ("ALLOCATING", "ALLOCATED")
    ready = vim.computes.wait_ready(compute.computeId, timeout=20)
    assert ready.provisioningState.value == "ALLOCATED" and ready.runningState.value == "RUNNING"
    stopped = vim.computes.operate(compute.computeId, "STOP", wait=20)
    assert stopped.runningState.value == "STOPPED"
    with pytest.raises(WaitTimeout):
        vim.wait_until(lambda: vim.computes.get(compute.computeId), lambda c: c is None, timeout=0.3)
    assert vim.computes.terminate(compute.computeId) is not None  # 202: TERMINATING
    vim.computes.wait_gone(compute.computeId, timeout=20)


def test_every_api_answers_through_the_sdk(vim: Client) -> None:
    network = vim.networks.allocate({"networkResourceName": "sdk"})
    subnet = vim.subnets.allocate({"networkId": network.networkResourceId, "ipVersion": "IPv4", "cidr": "10.9.0.0/24"})
    port = vim.ports.allocate({"networkId": network.networkResourceId})
    assert port.fixedIps[0].subnetId == subnet.resourceId
    volume = vim.storages.allocate({"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 2}})
    assert vim.storages.scale(volume.storageId, 3).sizeOfStorage == 3
    snap = vim.storages.operate(volume.storageId, "CREATE_SNAPSHOT", {"snapshotName": "s"})
    vim.storages.operate(volume.storageId, "DELETE_SNAPSHOT", {"snapshotId": snap.storageOperationOutputData["snapshotId"]})
    group = vim.compute_affinity_groups.create({"type": "ANTI_AFFINITY"})
    assert vim.compute_info.capacity(resource_type_id="m1.tiny").availableInstances > 0
    assert vim.compute_info.resource_types() and vim.network_info.resource_types() and vim.storage_info.resource_types()
    assert vim.network_info.capacity().segments and vim.storage_info.capacity().totalGb > 0
    assert vim.performance.metrics_catalogue()
    job = vim.pm_jobs.create({"objectType": "VirtualCompute", "objectFilter": "(eq,metadata/x,y)",
                              "performanceMetricGroup": ["VirtualisedComputeResource"],
                              "collectionPeriod": 60, "reportingPeriod": 60})
    assert [j.pmJobId for j in vim.pm_jobs.list()] == [job.pmJobId] and list(vim.pm_jobs.reports(job.pmJobId)) == []
    assert list(vim.alarms.list()) == []
    consumer = vim.admin.consumers.create({"consumerName": "sdk-test", "scopes": ["compute:read"]})
    assert consumer.clientSecret and vim.admin.consumers.rotate_secret(consumer.consumerId).clientSecret
    vim.admin.consumers.delete(consumer.consumerId)
    vim.pm_jobs.delete(job.pmJobId)
    vim.compute_affinity_groups.delete(group.groupId)
    vim.storages.delete(volume.storageId)
    assert vim.ports.terminate_many([port.resourceId]).networkResourceId == [port.resourceId]
    vim.subnets.delete(subnet.resourceId)
    vim.networks.delete(network.networkResourceId)
    assert list(vim.networks.list()) == []


def test_async_client_in_parallel(server: RunningServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.base_url, ADMIN_ID, ADMIN_SECRET) as vim:
            assert len([f async for f in vim.flavours.list()]) == 7
            computes = await asyncio.gather(*(vim.computes.allocate({"computeFlavourId": "m1.tiny"}, wait=20)
                                              for _ in range(4)))
            assert {c.provisioningState.value for c in computes} == {"ALLOCATED"}
            with pytest.raises(NotFound):
                await vim.computes.get("nope")
            ready = await vim.wait_until(lambda: vim.computes.get(computes[0].computeId),
                                         lambda c: c is not None and c.runningState.value == "RUNNING")
            assert ready.computeId == computes[0].computeId
            assert (await vim.computes.terminate_many([c.computeId for c in computes])).computeId

    asyncio.run(main())


def test_receiver_checks_basic_auth_and_collects_notifications(vim: Client) -> None:
    receiver = NotificationReceiver(basic=("ccm", "pw"))
    url = receiver.serve_in_thread()
    try:
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, auth=("ccm", "pw")).status_code == 204
        duplicate = {"id": "n1", "notificationType": "X"}
        for _ in range(2):
            assert httpx.post(url, json=duplicate, auth=("ccm", "pw")).status_code == 204
        assert receiver.notifications == [duplicate]
        subscription = vim.subscriptions("storage").create({
            "callbackUri": url, "authentication": {"authType": ["BASIC"],
                                                   "paramsBasic": {"userName": "ccm", "password": "pw"}}})
        volume = vim.storages.allocate({"storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}})
        added = receiver.wait_for(lambda n: n.get("virtualisedResourceId") == volume.storageId)
        assert added["changeType"] == "ADDED" and added["subscriptionId"] == subscription.id
        vim.subscriptions("storage").delete(subscription.id)
        vim.storages.delete(volume.storageId)
    finally:
        receiver.stop()


def test_client_models_mirror_the_servers() -> None:
    from vimkit.client import models
    from vimkit.notify import subscriptions

    for name in ("SubscriptionRequest", "Subscription", "DeliveryStatus", "SubscriptionAuthentication"):
        assert set(getattr(models, name).model_fields) == set(getattr(subscriptions, name).model_fields), name
    from vimkit.notify.filters import SubscriptionFilter

    assert set(models.SubscriptionFilter.model_fields) == set(SubscriptionFilter.model_fields)
    from vimkit.api.routes.compute_info import ComputeCapacity

    assert set(models.ComputeCapacity.model_fields) == set(ComputeCapacity.model_fields)

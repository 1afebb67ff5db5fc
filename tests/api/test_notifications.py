"""Subscriptions and notification delivery through the HTTP API, to real receivers on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, assert_problem, child_processes, start_server
from tests.receivers import Behaviour, Receiver

FAST = {"notify_backoff_base": 0.05, "notify_backoff_cap": 0.3, "notify_poll_interval": 0.1}


@pytest.fixture
def fast_vim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", database_url, **FAST)
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


def flavour(flavour_id: str, **extra: object) -> dict:
    return {"flavourId": flavour_id, "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 512}, **extra}


def subscribe(api, receiver: Receiver, path: str = "/compute-info/v1/subscriptions", **body: object) -> dict:  # type: ignore[no-untyped-def]
    response = api.post(path, json={"callbackUri": receiver.url, **body})
    assert response.status_code == 201, response.text
    return response.json()


def wait_status(api, subscription_id: str, predicate, timeout: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/compute-info/v1/subscriptions/{subscription_id}").json()
        if predicate(body["deliveryStatus"]) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_subscription_lifecycle(fast_vim: RunningServer, receiver: Receiver) -> None:
    with fast_vim.client() as api:
        created = api.post(
            "/compute-info/v1/subscriptions",
            json={"callbackUri": receiver.url, "filter": {"changeTypes": ["ADDITION"]}},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert receiver.gets == 1
        assert body["callbackUri"] == receiver.url and body["filter"] == {"changeTypes": ["ADDITION"]}
        assert created.headers["location"] == body["_links"]["self"]["href"]
        assert body["deliveryStatus"] == {"state": "ACTIVE", "pendingCount": 0, "consecutiveFailures": 0}
        assert api.get(f"/compute-info/v1/subscriptions/{body['id']}").json()["id"] == body["id"]
        listed = api.get("/compute-info/v1/subscriptions", params={"filter": f"(eq,id,{body['id']})"}).json()
        assert [item["id"] for item in listed] == [body["id"]]
        assert api.get("/compute/v1/subscriptions").json() == []  # another API's collection
        assert_problem(api.get(f"/compute/v1/subscriptions/{body['id']}"), 404)
        assert api.delete(f"/compute-info/v1/subscriptions/{body['id']}").status_code == 204
        assert_problem(api.get(f"/compute-info/v1/subscriptions/{body['id']}"), 404)


def test_flavour_changes_are_delivered_in_order(fast_vim: RunningServer, receiver: Receiver) -> None:
    with fast_vim.client() as api:
        subscription = subscribe(api, receiver)
        for index in range(5):
            assert api.post("/compute/v1/flavours", json=flavour(f"n{index}")).status_code == 201
        assert api.delete("/compute/v1/flavours/n0").status_code == 204
    received = receiver.wait_for(6)
    assert [item["sequence"] for item in received] == [1, 2, 3, 4, 5, 6]
    first = received[0]
    assert first["notificationType"] == "InformationChangeNotification"
    assert first["subscriptionId"] == subscription["id"]
    assert first["changeType"] == "ADDITION" and first["resourceTypeId"] == "n0"
    assert first["vimId"] == "vimkit" and first["changeId"] and first["id"] and first["timeStamp"]
    assert first["changedResourceData"]["flavour"]["flavourId"] == "n0"
    assert first["_links"]["subscription"]["href"] == subscription["_links"]["self"]["href"]
    assert received[-1]["changeType"] == "REMOVAL" and received[-1]["resourceTypeId"] == "n0"
    assert len({item["id"] for item in received}) == 6


def test_filters_select_notifications(fast_vim: RunningServer, receiver: Receiver) -> None:
    other = Receiver().start()
    try:
        with fast_vim.client() as api:
            subscribe(api, receiver, filter={"changeTypes": ["REMOVAL"]})
            subscribe(api, other, filter={"resourceIds": ["wanted"]})
            api.post("/compute/v1/flavours", json=flavour("wanted"))
            api.post("/compute/v1/flavours", json=flavour("unwanted"))
            api.delete("/compute/v1/flavours/unwanted")
        removal = receiver.wait_for(1)
        wanted = other.wait_for(1)
        time.sleep(0.5)
        assert [(n["changeType"], n["resourceTypeId"]) for n in receiver.notifications] == [("REMOVAL", "unwanted")]
        assert [(n["changeType"], n["resourceTypeId"]) for n in other.notifications] == [("ADDITION", "wanted")]
        assert removal[0]["sequence"] == 1 and wanted[0]["sequence"] == 1
    finally:
        other.stop()


def test_receiver_failing_then_recovering_gets_everything_in_order(fast_vim: RunningServer) -> None:
    flaky = Receiver(Behaviour(fail_first=3)).start()
    try:
        with fast_vim.client() as api:
            subscription = subscribe(api, flaky)
            for index in range(4):
                api.post("/compute/v1/flavours", json=flavour(f"r{index}"))
            received = flaky.wait_for(4)
            assert [item["sequence"] for item in received] == [1, 2, 3, 4]
            status = wait_status(api, subscription["id"], lambda s: s["pendingCount"] == 0)["deliveryStatus"]
            assert status["state"] == "ACTIVE" and status["consecutiveFailures"] == 0 and status["lastSuccessAt"]
            assert status["lastError"] == "callback answered 500"
    finally:
        flaky.stop()


def test_failing_subscription_is_marked_and_resumes(database_url: str, tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", database_url, notify_give_up_seconds=0.5, **FAST)
    broken = Receiver().start()
    try:
        with server.client() as api:
            subscription = subscribe(api, broken)
            broken.behaviour.fail_forever = True
            api.post("/compute/v1/flavours", json=flavour("f1"))
            api.post("/compute/v1/flavours", json=flavour("f2"))
            status = wait_status(api, subscription["id"], lambda s: s["state"] == "FAILING")["deliveryStatus"]
            assert status["state"] == "FAILING" and status["pendingCount"] == 2
            assert status["consecutiveFailures"] >= 2 and status["failingSince"] and status["lastError"]
            broken.behaviour.fail_forever = False
            received = broken.wait_for(2)
            assert [item["sequence"] for item in received] == [1, 2]
            # The state turns ACTIVE with the first success; the count follows with the batched acks.
            status = wait_status(api, subscription["id"],
                                 lambda s: s["state"] == "ACTIVE" and s["pendingCount"] == 0)["deliveryStatus"]
            assert status["state"] == "ACTIVE" and status["pendingCount"] == 0
    finally:
        broken.stop()
        server.stop()


def test_slow_subscriber_times_out_without_blocking_others(database_url: str, tmp_path: Path) -> None:
    # If a slow subscriber held up the others, each of the healthy one's 3 notifications would
    # wait for a 2 s timeout (6 s in all); concurrent delivery takes a fraction of a second. The
    # 4 s bound separates the two with room for a loaded CI machine.
    server = start_server(tmp_path / "data", database_url, notify_request_timeout=2.0, **FAST)
    slow = Receiver(Behaviour(delay=4.0)).start()
    healthy = Receiver().start()
    try:
        with server.client() as api:
            slow_subscription = subscribe(api, slow)
            subscribe(api, healthy)
            started = time.monotonic()
            for index in range(3):
                api.post("/compute/v1/flavours", json=flavour(f"s{index}"))
            healthy.wait_for(3, timeout=8)
            assert time.monotonic() - started < 4.0
            status = wait_status(api, slow_subscription["id"], lambda s: s.get("lastError") == "timed out")
            assert status["deliveryStatus"]["lastError"] == "timed out"
    finally:
        slow.stop()
        healthy.stop()
        server.stop()


def test_basic_and_oauth2_callback_authentication(fast_vim: RunningServer) -> None:
    basic = Receiver(Behaviour(basic=("ccm", "pa55word"))).start()
    oauth = Receiver(Behaviour(oauth_client=("vim-client", "s3cret"))).start()
    try:
        with fast_vim.client() as api:
            wrong = api.post("/compute-info/v1/subscriptions", json={
                "callbackUri": basic.url,
                "authentication": {"authType": ["BASIC"], "paramsBasic": {"userName": "ccm", "password": "nope"}}})
            assert_problem(wrong, 422, "callbackUri")
            basic_sub = subscribe(api, basic, authentication={
                "authType": ["BASIC"], "paramsBasic": {"userName": "ccm", "password": "pa55word"}})
            assert "authentication" not in basic_sub and "pa55word" not in str(basic_sub)
            subscribe(api, oauth, authentication={
                "authType": ["OAUTH2_CLIENT_CREDENTIALS"],
                "paramsOauth2ClientCredentials": {"clientId": "vim-client", "clientPassword": "s3cret",
                                                  "tokenEndpoint": oauth.token_url}})
            for index in range(5):
                api.post("/compute/v1/flavours", json=flavour(f"a{index}"))
            assert len(basic.wait_for(5)) == 5 and len(oauth.wait_for(5)) == 5
            listed = api.get("/compute-info/v1/subscriptions").text
            assert "pa55word" not in listed and "s3cret" not in listed
        assert oauth.token_requests == 1  # cached across the test GET and all deliveries
        assert oauth.rejected_auth == 0
    finally:
        basic.stop()
        oauth.stop()


BAD_SUBSCRIPTIONS = [
    ({"callbackUri": "http://169.254.169.254/latest/meta-data"}, 400, "callbackUri"),
    ({"callbackUri": "ftp://127.0.0.1/x"}, 400, "callbackUri"),
    ({"callbackUri": "http://user:pw@127.0.0.1/x"}, 400, "callbackUri"),
    ({"callbackUri": "RECEIVER", "filter": {"notificationTypes": ["AlarmNotification"]}}, 400, "filter/notificationTypes/0"),
    ({"callbackUri": "RECEIVER", "filter": {"perceivedSeverities": ["MAJOR"]}}, 400, "filter/perceivedSeverities"),
    ({"callbackUri": "RECEIVER", "filter": {"changeTypes": ["ADDED"]}}, 400, "filter/changeTypes/0"),
    ({"callbackUri": "RECEIVER", "filter": {"colour": ["red"]}}, 400, "filter/colour"),
    ({"callbackUri": "RECEIVER", "authentication": {"authType": ["BASIC"]}}, 400, "authentication"),
    ({"callbackUri": "RECEIVER", "authentication": {"authType": ["KERBEROS"]}}, 400, "authentication/authType/0"),
    ({"callbackUri": "http://127.0.0.1:9/closed"}, 422, "callbackUri"),
    ({"callbackUri": "RECEIVER_404"}, 422, "callbackUri"),
]


@pytest.mark.parametrize("body,status,field", BAD_SUBSCRIPTIONS)
def test_bad_subscriptions_are_refused_and_nothing_is_stored(
    sqlite_vim: RunningServer, receiver: Receiver, body: dict, status: int, field: str
) -> None:
    body = dict(body)
    if body["callbackUri"] == "RECEIVER":
        body["callbackUri"] = receiver.url
    elif body["callbackUri"] == "RECEIVER_404":
        receiver.behaviour.get_status = 404
        body["callbackUri"] = receiver.url
    with sqlite_vim.client() as api:
        assert_problem(api.post("/compute-info/v1/subscriptions", json=body), status, field)
        assert api.get("/compute-info/v1/subscriptions").json() == []


def test_notifications_respect_resource_groups(fast_vim: RunningServer) -> None:
    alice, bob = fast_vim.new_consumer("alice"), fast_vim.new_consumer("bob")
    alice_rx, bob_rx = Receiver().start(), Receiver().start()
    try:
        with alice.client() as a, bob.client() as b:
            alice_sub = subscribe(a, alice_rx)
            subscribe(b, bob_rx)
            assert_problem(b.get(f"/compute-info/v1/subscriptions/{alice_sub['id']}"), 404)
            assert_problem(b.delete(f"/compute-info/v1/subscriptions/{alice_sub['id']}"), 404)
            assert b.get("/compute-info/v1/subscriptions").json()[0]["id"] != alice_sub["id"]
            a.post("/compute/v1/flavours", json=flavour("alice-secret", isPublic=False))
            a.post("/compute/v1/flavours", json=flavour("alice-public"))
        assert {n["resourceTypeId"] for n in alice_rx.wait_for(2)} == {"alice-secret", "alice-public"}
        bob_rx.wait_for(1)
        time.sleep(0.5)
        assert [n["resourceTypeId"] for n in bob_rx.notifications] == ["alice-public"]
    finally:
        alice_rx.stop()
        bob_rx.stop()


@pytest.mark.postgres
def test_two_replicas_share_delivery_without_duplicates(tmp_path: Path, receiver: Receiver) -> None:
    from tests.conftest import PG_URL

    if not PG_URL:
        pytest.skip("PostgreSQL not configured")
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"vk_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    first = start_server(tmp_path / "one", url, replica_id="one", **FAST)
    second = start_server(tmp_path / "two", url, replica_id="two", **FAST)
    try:
        others = [Receiver().start() for _ in range(5)]
        with first.client() as api:
            for target in [receiver, *others]:
                subscribe(api, target)
        with first.client() as api_one, second.client() as api_two:
            for index in range(60):
                (api_one if index % 2 else api_two).post("/compute/v1/flavours", json=flavour(f"rep{index}"))
        for target in [receiver, *others]:
            target.wait_for(60)
            time.sleep(0.3)
            sequences = [item["sequence"] for item in target.notifications]
            assert sequences == list(range(1, 61)), sequences  # no gap, no duplicate, in order
            target.stop()
    finally:
        first.stop()
        second.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- delivery worker processes ---------------------------------------------------------------
def _delivery_workers() -> list[int]:
    """The `vimkit deliver` processes started by a server running in this test process."""
    import os

    return child_processes(os.getpid(), "deliver --from-server")


def test_delivery_workers_deliver_in_order_exactly_once(database_url: str, tmp_path: Path) -> None:
    from sqlalchemy import select

    from vimkit.store.models import SubscriptionRow

    server = start_server(tmp_path / "data", database_url, notify_workers=2, replica_id="main", **FAST)
    receivers = [Receiver().start() for _ in range(4)]
    try:
        deadline = time.monotonic() + 30
        while len(_delivery_workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_delivery_workers()) == 2
        with server.client() as api:
            for target in receivers:
                subscribe(api, target)
            for index in range(40):
                assert api.post("/compute/v1/flavours", json=flavour(f"w{index}")).status_code == 201
        for target in receivers:
            target.wait_for(40, timeout=60)
        # The workers hold the leases (for a moment after they caught up), the server never does.
        with server.services.database.read() as session:  # type: ignore[attr-defined]
            owners = set(session.scalars(select(SubscriptionRow.lease_owner)))
        assert owners <= {"main-w0", "main-w1", None} and owners - {None}, owners
        time.sleep(0.5)
        for target in receivers:
            sequences = [item["sequence"] for item in target.notifications]
            assert sequences == list(range(1, 41)), sequences  # no gap, no duplicate, in order
            assert len({item["id"] for item in target.notifications}) == 40
    finally:
        server.stop()
        for target in receivers:
            target.stop()
    deadline = time.monotonic() + 15
    while _delivery_workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _delivery_workers(), "the workers outlived the server"


# -- the callback HTTP client ----------------------------------------------------------------
def _raw_server(answer: bytes, close_after: bool = False, delay: float = 0.0):  # type: ignore[no-untyped-def]
    """A one-thread TCP server on loopback answering every request with ``answer``."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while True:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    if not _:
                        continue
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(rest) < length:
                        continue
                    requests.append(head + b"\r\n\r\n" + rest[:length])
                    data = rest[length:]
                    time.sleep(delay)
                    connection.sendall(answer)
                    if close_after:
                        break

    threading.Thread(target=serve, daemon=True).start()
    return listener, requests


def _post(url: str, body: bytes = b"{}", headers: dict | None = None, timeout: float = 5.0,
          times: int = 1, pause: float = 0.0) -> list[int]:
    import asyncio

    from vimkit.notify.transport import CallbackClient

    async def run() -> list[int]:
        client = CallbackClient(timeout)
        statuses = []
        try:
            for _ in range(times):
                statuses.append(await client.post(url, body, headers or {"Content-Type": "application/json"}))
                await asyncio.sleep(pause)
            return statuses
        finally:
            await client.close()

    return asyncio.run(run())


def test_callback_client_keep_alive_and_response_framings() -> None:
    receiver = Receiver().start()
    try:
        assert _post(receiver.url, b'{"sequence": 1}', times=3) == [204, 204, 204]
        assert [n["sequence"] for n in receiver.notifications] == [1, 1, 1]
    finally:
        receiver.stop()
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    listener, requests = _raw_server(chunked)
    try:
        port = listener.getsockname()[1]
        assert _post(f"http://127.0.0.1:{port}/cb?x=1", b"{}", times=2) == [200, 200]
        assert requests[0].startswith(b"POST /cb?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nContent-Length: 2\r\n" in requests[0] and requests[0].endswith(b"\r\n\r\n{}")
    finally:
        listener.close()
    # No length, not chunked: the body ends with the connection.
    until_close = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\naccepted"
    listener, requests = _raw_server(until_close, close_after=True)
    try:
        assert _post(f"http://127.0.0.1:{listener.getsockname()[1]}/", times=2) == [202, 202]
        assert len(requests) == 2
    finally:
        listener.close()


def test_callback_client_resends_once_on_a_connection_the_peer_closed() -> None:
    # Keep-alive advertised, but the server closes after each answer: the second post finds a
    # dead pooled connection and must go through on a fresh one.
    listener, requests = _raw_server(b"HTTP/1.1 204 No Content\r\n\r\n", close_after=True)
    try:
        assert _post(f"http://127.0.0.1:{listener.getsockname()[1]}/cb", times=3) == [204, 204, 204]
        assert len(requests) == 3
        # The same with the close already seen by the client when the next post starts.
        assert _post(f"http://127.0.0.1:{listener.getsockname()[1]}/cb", times=3, pause=0.2) == [204, 204, 204]
        assert len(requests) == 6
    finally:
        listener.close()


def test_callback_client_failures() -> None:
    import socket

    from vimkit.notify.transport import CallbackError

    listener, _ = _raw_server(b"HTTP/1.1 204 No Content\r\n\r\n", delay=2.0)
    try:
        with pytest.raises(TimeoutError):
            _post(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
    finally:
        listener.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(OSError):
        _post(f"http://127.0.0.1:{closed_port}/")
    garbage, _ = _raw_server(b"SMTP ready\r\n\r\n")
    try:
        with pytest.raises(CallbackError):
            _post(f"http://127.0.0.1:{garbage.getsockname()[1]}/")
    finally:
        garbage.close()
    with pytest.raises(ValueError):
        _post("http://127.0.0.1:9/", headers={"Authorization": "Bearer x\r\nInjected: yes"})
    with pytest.raises(ValueError):
        _post("http://127.0.0.1:9/a b")


def test_fan_out_serialises_once_and_splices_the_same_document() -> None:
    import orjson

    from vimkit.notify.fanout import _Bodies

    href = "http://vim/compute-info/v1/subscriptions/s-1"
    parts = (b',"subscriptionId":"s-1"', b'"subscription":{"href":' + orjson.dumps(href) + b"}}}")
    payloads = [
        {"changeId": "c", "resourceTypeId": "r", "changedResourceData": {"a": [1, 2], "b": None}},
        {"alarm": {"id": "a"}, "_links": {"alarms": {"href": "http://vim/faults/v1/alarms"}}},
        {},
        {"_links": {}},
        {"_links": {"subscription": {"href": "kept apart"}}},  # general path
        {"sequence": 99},  # a payload member that shadows a header member: general path
    ]
    for payload in payloads:
        bodies = _Bodies("n-1", "InformationChangeNotification", "2026-11-26T00:00:00Z", payload)
        document = bodies.document("s-1", 7, href)
        assert orjson.loads(bodies.body("s-1", 7, href, *parts)) == document
        assert document["_links"]["subscription"] == {"href": href}  # type: ignore[index]
    assert _Bodies("n", "T", "t", payloads[0]).spliced and not _Bodies("n", "T", "t", payloads[5]).spliced

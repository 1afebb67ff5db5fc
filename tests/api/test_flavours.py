"""Compute flavours through the HTTP API: every convention of rest-binding.md §1 end to end."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import RunningServer, assert_problem, start_server


def flavour(flavour_id: str | None = None, vcpus: int = 2, mem: int = 4096, **extra: object) -> dict:
    body: dict = {"virtualCpu": {"numVirtualCpu": vcpus}, "virtualMemory": {"virtualMemSize": mem}, **extra}
    if flavour_id:
        body["flavourId"] = flavour_id
    return body


def all_pages(client, url: str) -> tuple[list[dict], int]:
    items: list[dict] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        items.extend(response.json())
        pages += 1
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else ""
    return items, pages


def test_seeded_public_flavours_are_listed(vim: RunningServer) -> None:
    with vim.client() as api:
        response = api.get("/compute/v1/flavours")
    assert response.status_code == 200
    ids = {item["flavourId"] for item in response.json()}
    assert {"m1.tiny", "m1.small", "m1.medium"} <= ids
    small = next(item for item in response.json() if item["flavourId"] == "m1.small")
    assert small["virtualCpu"]["numVirtualCpu"] == 1 and small["virtualMemory"]["virtualMemSize"] == 2048
    assert small["_links"]["self"]["href"].endswith("/compute/v1/flavours/m1.small")


def test_create_get_delete_with_etags(vim: RunningServer) -> None:
    with vim.client() as api:
        created = api.post("/compute/v1/flavours", json=flavour("gold", 4, 8192, metadata={"tier": "gold"}))
        assert created.status_code == 201, created.text
        assert created.headers["location"].endswith("/compute/v1/flavours/gold")
        etag = created.headers["etag"]
        body = created.json()
        assert body["flavourId"] == "gold" and body["isPublic"] is True and body["metadata"] == {"tier": "gold"}

        fetched = api.get("/compute/v1/flavours/gold")
        assert fetched.status_code == 200 and fetched.headers["etag"] == etag
        assert fetched.json() == body
        assert api.get("/compute/v1/flavours/gold", headers={"If-None-Match": etag}).status_code == 304

        stale = api.delete("/compute/v1/flavours/gold", headers={"If-Match": '"not-the-etag"'})
        assert_problem(stale, 412)
        assert api.get("/compute/v1/flavours/gold").status_code == 200
        assert api.delete("/compute/v1/flavours/gold", headers={"If-Match": etag}).status_code == 204
        assert_problem(api.get("/compute/v1/flavours/gold"), 404)
        assert_problem(api.delete("/compute/v1/flavours/gold"), 404)


def test_vim_assigns_an_id_and_duplicates_conflict(vim: RunningServer) -> None:
    with vim.client() as api:
        created = api.post("/compute/v1/flavours", json=flavour())
        assert created.status_code == 201
        uuid.UUID(created.json()["flavourId"])
        again = api.post("/compute/v1/flavours", json=flavour("m1.small"))
        assert_problem(again, 409, "flavourId")


def test_metadata_accepted_as_key_value_list(vim: RunningServer) -> None:
    with vim.client() as api:
        created = api.post(
            "/compute/v1/flavours", json=flavour("kv", metadata=[{"key": "a", "value": "1"}])
        )
        assert created.status_code == 201, created.text
        assert created.json()["metadata"] == {"a": "1"}


def test_full_flavour_with_every_member(vim: RunningServer) -> None:
    body = flavour(
        "full", 8, 32768,
        accelerationCapability=["dpdk"],
        storageAttributes=[{"typeOfStorage": "root", "sizeOfStorage": 200, "rdmaEnabled": False}],
        virtualNetworkInterface=[{"typeVirtualNic": "VIRTIO", "bandwidth": 10000, "metadata": {"a": "b"}}],
        metadata={"tier": "gold"},
    )
    body["virtualCpu"].update(cpuArchitecture="x86_64", cpuClock=2400,
                              virtualCpuPinning={"virtualCpuPinningPolicy": "STATIC"})
    body["virtualMemory"].update(numaEnabled=True)
    with vim.client() as api:
        created = api.post("/compute/v1/flavours", json=body)
        assert created.status_code == 201, created.text
        stored = api.get("/compute/v1/flavours/full").json()
        for key, value in body.items():
            assert stored[key] == value, key
        nic = api.get("/compute/v1/flavours", params={"filter": "(eq,virtualNetworkInterface/typeVirtualNic,VIRTIO)"})
        assert [item["flavourId"] for item in nic.json()] == ["full"]


def test_filters_compile_to_sql_and_select(vim: RunningServer) -> None:
    with vim.client() as api:
        for index in range(6):
            api.post("/compute/v1/flavours", json=flavour(f"f{index}", index + 1, 1024 * (index + 1),
                                                          metadata={"cluster": "blue" if index % 2 else "red"}))
        by_cpu = api.get("/compute/v1/flavours", params={"filter": "(gte,virtualCpu/numVirtualCpu,5);(cont,flavourId,f)"})
        assert by_cpu.status_code == 200, by_cpu.text
        assert sorted(item["flavourId"] for item in by_cpu.json()) == ["f4", "f5"]
        by_meta = api.get("/compute/v1/flavours", params={"filter": "(eq,metadata/cluster,blue)"})
        assert sorted(item["flavourId"] for item in by_meta.json()) == ["f1", "f3", "f5"]
        in_list = api.get("/compute/v1/flavours", params={"filter": "(in,flavourId,f0,m1.tiny,nope)"})
        assert sorted(item["flavourId"] for item in in_list.json()) == ["f0", "m1.tiny"]
        ordered = api.get("/compute/v1/flavours", params={"filter": "(cont,flavourId,f)", "sort": "-virtualMemory/virtualMemSize"})
        assert [item["flavourId"] for item in ordered.json()] == ["f5", "f4", "f3", "f2", "f1", "f0"]


@pytest.mark.parametrize(
    "expression",
    ["(eq,flavourId", "(bogus,flavourId,x)", "(eq,noSuchAttribute,x)", "(gt,virtualCpu/numVirtualCpu,many)", "(eq,virtualCpu,1)"],
)
def test_bad_filters_are_400_naming_filter(vim: RunningServer, expression: str) -> None:
    with vim.client() as api:
        assert_problem(api.get("/compute/v1/flavours", params={"filter": expression}), 400, "filter")


def test_paging_with_link_headers(tmp_path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, page_size=3)
    try:
        with server.client() as api:
            for index in range(8):
                assert api.post("/compute/v1/flavours", json=flavour(f"pg-{index}")).status_code == 201
            items, pages = all_pages(api, "/compute/v1/flavours?filter=(cont,flavourId,pg-)")
            assert [item["flavourId"] for item in items] == [f"pg-{i}" for i in range(8)]
            assert pages == 3
            first = api.get("/compute/v1/flavours", params={"filter": "(cont,flavourId,pg-)"})
            assert 'rel="next"' in first.headers["link"]
            assert_problem(api.get("/compute/v1/flavours", params={"nextpage_opaque_marker": "garbage!"}), 400,
                           "nextpage_opaque_marker")
            sorted_items, _ = all_pages(api, "/compute/v1/flavours?filter=(cont,flavourId,pg-)&sort=-flavourId")
            assert [item["flavourId"] for item in sorted_items] == [f"pg-{i}" for i in reversed(range(8))]
    finally:
        server.stop()


def test_attribute_selectors(vim: RunningServer) -> None:
    with vim.client() as api:
        api.post("/compute/v1/flavours", json=flavour("sel", metadata={"a": "b"}))
        response = api.get("/compute/v1/flavours", params={"filter": "(eq,flavourId,sel)", "exclude_fields": "metadata,storageAttributes"})
        assert response.status_code == 200, response.text
        (item,) = response.json()
        assert "metadata" not in item and "storageAttributes" not in item and item["flavourId"] == "sel"
        assert item["_links"]["self"]["href"].endswith("/flavours/sel")
        only = api.get("/compute/v1/flavours", params={"filter": "(eq,flavourId,sel)", "fields": "metadata"}).json()[0]
        assert only["metadata"] == {"a": "b"} and "storageAttributes" not in only and only["_links"]
        assert item["virtualCpu"]["numVirtualCpu"] == 2
        mandatory = api.get("/compute/v1/flavours", params={"exclude_fields": "virtualCpu"})
        assert_problem(mandatory, 400, "exclude_fields")
        both = api.get("/compute/v1/flavours", params={"fields": "metadata", "exclude_fields": "storageAttributes"})
        assert_problem(both, 400)
        unknown = api.get("/compute/v1/flavours", params={"exclude_fields": "noSuchThing"})
        assert_problem(unknown, 400, "exclude_fields")


def test_idempotency_key_replays_and_rejects_a_different_body(vim: RunningServer) -> None:
    with vim.client() as api:
        headers = {"Idempotency-Key": "create-idem-1"}
        first = api.post("/compute/v1/flavours", json=flavour(), headers=headers)
        second = api.post("/compute/v1/flavours", json=flavour(), headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert second.headers["etag"] == first.headers["etag"]
        assert second.headers.get("idempotent-replayed") == "true"
        different = api.post("/compute/v1/flavours", json=flavour(vcpus=3), headers=headers)
        assert_problem(different, 422, "Idempotency-Key")
        listed = api.get("/compute/v1/flavours", params={"filter": f"(eq,flavourId,{first.json()['flavourId']})"})
        assert len(listed.json()) == 1
        # a failed request is replayed as the same failure, and keys are per consumer
        conflict_headers = {"Idempotency-Key": "dup-1"}
        dup = api.post("/compute/v1/flavours", json=flavour("m1.small"), headers=conflict_headers)
        assert_problem(dup, 409)
        assert api.post("/compute/v1/flavours", json=flavour("m1.small"), headers=conflict_headers).status_code == 409
    other = vim.new_consumer()
    with other.client() as api:
        again = api.post("/compute/v1/flavours", json=flavour(), headers={"Idempotency-Key": "create-idem-1"})
        assert again.status_code == 201 and again.json()["flavourId"] != first.json()["flavourId"]


def test_private_flavours_are_isolated_per_resource_group(vim: RunningServer) -> None:
    alice, bob = vim.new_consumer("alice"), vim.new_consumer("bob")
    with alice.client() as a, bob.client() as b:
        assert a.post("/compute/v1/flavours", json=flavour("alice-private", isPublic=False)).status_code == 201
        assert a.post("/compute/v1/flavours", json=flavour("alice-public")).status_code == 201
        assert_problem(b.get("/compute/v1/flavours/alice-private"), 404)
        assert b.get("/compute/v1/flavours/alice-public").status_code == 200
        listed = {item["flavourId"] for item in b.get("/compute/v1/flavours").json()}
        assert "alice-private" not in listed and "alice-public" in listed
        filtered = b.get("/compute/v1/flavours", params={"filter": "(eq,flavourId,alice-private)"})
        assert filtered.json() == []
        assert_problem(b.delete("/compute/v1/flavours/alice-private"), 404)
        assert_problem(b.delete("/compute/v1/flavours/alice-public"), 403)
        assert a.get("/compute/v1/flavours/alice-private").status_code == 200


BAD_BODIES = [
    (b"{not json", "body"),
    (b'{"virtualCpu": {"numVirtualCpu": "many"}, "virtualMemory": {"virtualMemSize": 1}}', "virtualCpu/numVirtualCpu"),
    (b'{"virtualCpu": {"numVirtualCpu": 0}, "virtualMemory": {"virtualMemSize": 1}}', "virtualCpu/numVirtualCpu"),
    (b'{"virtualCpu": {"numVirtualCpu": 1}}', "virtualMemory"),
    (b'{"virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 1}, "colour": "red"}', "colour"),
    (b'{"virtualCpu": {"numVirtualCpu": 1, "virtualCpuPinning": {"virtualCpuPinningPolicy": "SOMETIMES"}}, '
     b'"virtualMemory": {"virtualMemSize": 1}}', "virtualCpu/virtualCpuPinning/virtualCpuPinningPolicy"),
    (b'{"virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 1}, '
     b'"virtualNetworkInterface": [{"typeVirtualNic": "WIFI"}]}', "virtualNetworkInterface/0/typeVirtualNic"),
    (b'{"flavourId": "bad id with spaces", "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 1}}', "flavourId"),
    (b"[]", "body"),
    (b'{"virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 1}, '
     b'"virtualNetworkInterface": [{"bandwidth": false}]}', "virtualNetworkInterface/0/bandwidth"),
    (b'{"virtualCpu": {"numVirtualCpu": "2"}, "virtualMemory": {"virtualMemSize": 1}}', "virtualCpu/numVirtualCpu"),
    (b'{"isPublic": "yes", "virtualCpu": {"numVirtualCpu": 1}, "virtualMemory": {"virtualMemSize": 1}}', "isPublic"),
]


@pytest.mark.parametrize("raw,field", BAD_BODIES)
def test_bad_bodies_are_400_naming_the_field_and_store_nothing(sqlite_vim: RunningServer, raw: bytes, field: str) -> None:
    with sqlite_vim.client() as api:
        before = len(api.get("/compute/v1/flavours").json())
        response = api.post("/compute/v1/flavours", content=raw, headers={"Content-Type": "application/json"})
        body = assert_problem(response, 400, field)
        assert "Traceback" not in response.text and "File \"" not in body["detail"]
        assert len(api.get("/compute/v1/flavours").json()) == before


def test_oversize_body_is_413(tmp_path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", max_body_bytes=2048)
    try:
        with server.client() as api:
            big = flavour("big", metadata={f"k{i}": "v" * 100 for i in range(40)})
            assert_problem(api.post("/compute/v1/flavours", json=big), 413)

            def chunks():
                yield b'{"flavourId": "streamed", "metadata": {"a": "'
                for _ in range(10):
                    yield b"x" * 1024
                yield b'"}}'

            streamed = api.post("/compute/v1/flavours", content=chunks(), headers={"Content-Type": "application/json"})
            assert_problem(streamed, 413)
            assert_problem(api.get("/compute/v1/flavours/big"), 404)
    finally:
        server.stop()


def test_unknown_query_parameter_is_400(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as api:
        assert_problem(api.get("/compute/v1/flavours", params={"colour": "red"}), 400, "colour")
        assert_problem(api.get("/compute/v1/flavours/m1.small", params={"filter": "(eq,a,b)"}), 400, "filter")


def test_concurrent_creations_share_commits_but_not_outcomes(vim: RunningServer) -> None:
    """Creations committed together (group commit) still answer one by one: a duplicate is a 409
    for that request alone, and each flavour that exists is deletable with its own ETag."""
    from concurrent.futures import ThreadPoolExecutor

    ids = [f"cc-{index}" for index in range(12)] + ["cc-0", "cc-1", "cc-1"]

    def create(flavour_id: str) -> tuple[str, int, str | None]:
        with vim.client() as api:
            response = api.post("/compute/v1/flavours", json=flavour(flavour_id))
            return flavour_id, response.status_code, response.headers.get("etag")

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, ids))
    created = {flavour_id: etag for flavour_id, status, etag in outcomes if status == 201}
    assert sorted(created) == sorted(set(ids))
    assert sorted(status for _id, status, _etag in outcomes if status != 201) == [409, 409, 409]
    with vim.client() as api:
        for flavour_id, etag in created.items():
            assert api.delete(f"/compute/v1/flavours/{flavour_id}", headers={"If-Match": etag}).status_code == 204
        assert_problem(api.delete("/compute/v1/flavours/cc-0"), 404)


def test_a_failing_write_fails_alone_in_a_shared_transaction(database_url: str) -> None:
    """Flavour writes share transactions (a group commit): a refusal or a failure after writing
    fails that write alone; the others commit."""
    import asyncio

    from sqlalchemy import select, text

    from vimkit.api.problems import ApiError
    from vimkit.store.db import Database
    from vimkit.store.group_commit import GroupCommit
    from vimkit.store.migrate import upgrade
    from vimkit.store.models import FlavourRow

    database = Database(database_url)
    upgrade(database)
    commits = GroupCommit(database)

    def insert(flavour_id: str, fail: BaseException | None = None):
        def work(session):
            if isinstance(fail, ApiError):
                raise fail
            session.execute(text("INSERT INTO flavours (id, resource_group_id, created_at, updated_at, version, "
                                 "body, is_public) VALUES (:id, 'g', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, '{}', "
                                 ":public)"), {"id": flavour_id, "public": True})
            if fail is not None:
                raise fail
            return flavour_id
        return work

    async def batch() -> list[object]:
        return await asyncio.gather(
            commits.run(insert("ok-1")), commits.run(insert("refused", ApiError(409, "no"))),
            commits.run(insert("broken", RuntimeError("after writing"))), commits.run(insert("ok-2")),
            return_exceptions=True)

    try:
        outcomes = asyncio.run(batch())
        assert outcomes[0] == "ok-1" and outcomes[3] == "ok-2"
        assert isinstance(outcomes[1], ApiError) and isinstance(outcomes[2], RuntimeError)
        with database.read() as session:
            assert sorted(session.scalars(select(FlavourRow.id))) == ["ok-1", "ok-2"]
    finally:
        database.dispose()

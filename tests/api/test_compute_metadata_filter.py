"""Filters on computes' ``metadata/<key>`` (the ``compute_metadata`` index), on SQLite and PostgreSQL.

``eq``/``neq``/``in``/``nin`` are answered by the index and must select exactly what the reference
evaluator selects over the documents; the index must follow every change of a compute's metadata
(allocate, update, a failed allocation, terminate), be filled by migration 0016 for computes
stored before it, and be what SQLite's planner reads once it has statistics.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import insert, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tests.api.test_compute import MERGE, WAIT, allocate, compute_settings, cvim, wait_for  # noqa: F401 - fixture
from tests.conftest import RunningServer, start_server
from vimkit.api.filters import evaluate, format_filter, parse_filter, Condition, FilterExpr
from vimkit.domain.compute import COMPUTE_SCHEMA
from vimkit.store.compute_tables import COMPUTE_METADATA, ComputeMetadataRow, ComputeRow
from vimkit.store.db import Database
from vimkit.store.filter_sql import compile_filter
from vimkit.store.map_index import value_digest
from vimkit.store.migrate import upgrade
from vimkit.store.repository import utcnow

LONG = "é" * 1024  # 1024 characters, 2048 bytes in UTF-8 (4 kB would be 1024 four-byte characters)
WIDE = "🎉" * 1024  # 4096 bytes: over PostgreSQL's btree entry limit, hence the digest
VALUES = ["c1", "c2", "C1", "50%", "5_0", "日本語", "", " c1", "c1 ", LONG, WIDE, "a,b", "it's"]
KEYS = ["cluster", "role", "we/ird", "vimkit.cluster", "k,@~"]


def ids(api: httpx.Client, text: str) -> set[str]:
    found: set[str] = set()
    url: str | None = "/compute/v1/computes"
    params: dict[str, str] | None = {"filter": text}
    while url:
        response = api.get(url, params=params)
        assert response.status_code == 200, response.text
        found |= {compute["computeId"] for compute in response.json()}
        link = response.links.get("next")
        url, params = (link["url"], None) if link else (None, None)
    return found


def expected(documents: list[dict[str, Any]], text: str) -> set[str]:
    expr = parse_filter(text)
    return {doc["computeId"] for doc in documents if evaluate(expr, doc, COMPUTE_SCHEMA)}


def index_rows(vim: RunningServer) -> dict[str, dict[str, str]]:
    """The side table, per compute id; checks each row's digest on the way."""
    rows: dict[str, dict[str, str]] = {}
    with vim.services.database.read() as session:  # type: ignore[attr-defined]
        query = select(ComputeRow.id, ComputeMetadataRow.key, ComputeMetadataRow.value,
                       ComputeMetadataRow.value_digest).join(ComputeRow, ComputeRow.seq == ComputeMetadataRow.compute_seq)
        for compute_id, key, value, digest in session.execute(query):
            assert digest == value_digest(value)
            rows.setdefault(compute_id, {})[key] = value
    return rows


def assert_index_follows_bodies(vim: RunningServer) -> None:
    with vim.services.database.read() as session:  # type: ignore[attr-defined]
        bodies = {compute_id: body.get("metadata") or {}
                  for compute_id, body in session.execute(select(ComputeRow.id, ComputeRow.body))}
    assert index_rows(vim) == {compute_id: metadata for compute_id, metadata in bodies.items() if metadata}


def filters_for(key: str, values: list[str]) -> list[str]:
    texts = []
    for op in ("eq", "neq"):
        for value in values:
            texts.append(format_filter(FilterExpr((Condition(op, ("metadata", key), (value,)),))))
    for op in ("in", "nin"):
        texts.append(format_filter(FilterExpr((Condition(op, ("metadata", key), tuple(values[:3])),))))
        texts.append(format_filter(FilterExpr((Condition(op, ("metadata", key), tuple(values[-3:])),))))
    return texts


def test_eq_neq_in_nin_select_what_the_reference_selects(cvim: RunningServer) -> None:
    rng = random.Random(5)
    consumer = cvim.new_consumer()
    with consumer.client() as api:
        for index in range(10):
            keys = rng.sample(KEYS, rng.randint(0, 4))
            metadata = {key: rng.choice(VALUES) for key in keys}
            if index == 0:
                metadata = {key: LONG for key in KEYS}
            if index == 1:
                metadata = {key: WIDE for key in KEYS}
            allocate(api, metadata=metadata, wait=False)
        documents = api.get("/compute/v1/computes").json()
        assert len(documents) == 10
        checked = 0
        for key in KEYS:
            for text in filters_for(key, VALUES):
                got = ids(api, text)
                assert got == expected(documents, text), text
                checked += bool(got) and len(got) < len(documents)
        assert checked > 20  # the dataset is not degenerate
        # the other operators still read the documents, with the same answers
        for text in ("(cont,metadata/cluster,%)", "(gt,metadata/cluster,c)", "(ncont,metadata/we~1ird,_)",
                     "(eq,metadata/cluster,c1);(neq,metadata/role,c2)", "(lte,metadata/role,c2)"):
            assert ids(api, text) == expected(documents, text), text
        # key names with / , @ ~ are escaped in the filter; a key nobody has matches nothing (eq) / all (neq)
        assert ids(api, "(eq,metadata/nobody,c1)") == set()
        assert ids(api, "(neq,metadata/nobody,c1)") == {doc["computeId"] for doc in documents}
    assert_index_follows_bodies(cvim)


def test_the_index_follows_every_change(cvim: RunningServer) -> None:
    owner, other = cvim.new_consumer(), cvim.new_consumer()
    driver = cvim.services.infrastructure.driver  # type: ignore[attr-defined]
    with owner.client() as api:
        first = allocate(api, metadata={"cluster": "c1", "role": "control"})
        second = allocate(api, metadata={"cluster": "c1"})
        bare = allocate(api)
        assert first["provisioningState"] == "ALLOCATED"
        assert ids(api, "(eq,metadata/cluster,c1)") == {first["computeId"], second["computeId"]}
        assert ids(api, "(neq,metadata/role,control)") == {second["computeId"], bare["computeId"]}
        assert_index_follows_bodies(cvim)

        # Update: change a value, add a key, remove a key with null
        url = f"/compute/v1/computes/{first['computeId']}"
        response = api.patch(url, headers=MERGE, json={"metadata": {"cluster": "c2", "zone": "z", "role": None}})
        assert response.status_code == 200, response.text
        assert response.json()["metadata"] == {"cluster": "c2", "zone": "z"}
        assert ids(api, "(eq,metadata/cluster,c1)") == {second["computeId"]}
        assert ids(api, "(eq,metadata/cluster,c2)") == {first["computeId"]}
        assert ids(api, "(in,metadata/zone,z,y)") == {first["computeId"]}
        assert ids(api, "(eq,metadata/role,control)") == set()
        assert_index_follows_bodies(cvim)
        # an update that does not touch the metadata leaves it (and the index) alone
        assert api.patch(url, headers=MERGE, json={"metadata": {}}).status_code == 200
        assert api.post(f"{url}/operate", headers=WAIT, json={"computeOperation": "STOP"}).status_code in (200, 202)
        assert ids(api, "(eq,metadata/cluster,c2)") == {first["computeId"]}
        assert_index_follows_bodies(cvim)

        # A failed allocation keeps its metadata: it is FAILED, and selectable by its labels
        driver.fail_next("create_compute")
        failed = allocate(api, metadata={"cluster": "c3"})
        assert failed["provisioningState"] == "FAILED"
        assert ids(api, "(eq,metadata/cluster,c3)") == {failed["computeId"]}
        assert_index_follows_bodies(cvim)

        # Another tenant cannot select these computes by their labels, whatever the operator
    with other.client() as api:
        other_one = allocate(api, metadata={"cluster": "c1"})
        assert ids(api, "(eq,metadata/cluster,c1)") == {other_one["computeId"]}
        assert ids(api, "(in,metadata/cluster,c1,c2,c3)") == {other_one["computeId"]}
        assert ids(api, "(neq,metadata/cluster,c9)") == {other_one["computeId"]}

    # Terminate: the rows go with the compute (ON DELETE CASCADE)
    with owner.client() as api:
        for compute in (first, second, failed):
            response = api.delete(f"/compute/v1/computes/{compute['computeId']}", headers=WAIT)
            assert response.status_code == 204, response.text
        assert ids(api, "(in,metadata/cluster,c1,c2,c3)") == set()
        assert ids(api, "(neq,metadata/cluster,c1)") == {bare["computeId"]}
    assert set(index_rows(cvim)) == {other_one["computeId"]}
    assert_index_follows_bodies(cvim)


def _compute_values(index: int, group: str, metadata: dict[str, str]) -> dict[str, Any]:
    now = utcnow()
    compute_id = str(uuid.UUID(int=index + 1))
    body = {"computeId": compute_id, "computeName": f"old-{index}", "flavourId": "m1.tiny", "zoneId": "zone-a",
            "hostId": "host-a1", "metadata": metadata, "resourceGroupId": group, "provisioningState": "ALLOCATED",
            "virtualNetworkInterface": [], "virtualDisks": [], "snapshots": []}
    return {"id": compute_id, "resource_group_id": group, "created_at": now, "updated_at": now, "version": 1,
            "body": body, "compute_name": body["computeName"], "host_id": "host-a1", "zone_id": "zone-a",
            "state": "ALLOCATED"}


def test_migration_0016_fills_the_index_from_stored_computes(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database, "0015")
        rows = [_compute_values(index, "g1", metadata) for index, metadata in enumerate(
            [{"cluster": "c1", "role": "worker"}, {"cluster": "c1"}, {}, {"cluster": WIDE}, {"cluster": "c2"}]
            + [{"cluster": f"n{n}"} for n in range(2500)])]  # more than one batch of the backfill
        with database.engine.begin() as connection:
            connection.execute(insert(ComputeRow.__table__), rows)
        upgrade(database)
        by_id = {row["id"]: row["body"] for row in rows}
        with database.read() as session:
            for text in ("(eq,metadata/cluster,c1)", "(neq,metadata/cluster,c1)", f"(eq,metadata/cluster,{WIDE})",
                         "(in,metadata/role,worker,x)", "(nin,metadata/cluster,c1,c2)", "(eq,metadata/cluster,n2499)"):
                expr = parse_filter(text)
                where = compile_filter(expr, COMPUTE_SCHEMA, database.dialect)
                got = set(session.scalars(select(ComputeRow.id).where(where)))
                assert got == {i for i, body in by_id.items() if evaluate(expr, body, COMPUTE_SCHEMA)}, text
            assert session.query(ComputeMetadataRow).count() == 2 + 1 + 1 + 1 + 2500
    finally:
        database.dispose()


def test_planner_statistics_are_refreshed_at_start_and_periodically(tmp_path: Path) -> None:
    path = tmp_path / "vimkit.db"

    def analyzed() -> set[str]:
        with sqlite3.connect(path) as connection:
            return {row[0] for row in connection.execute("SELECT tbl FROM sqlite_stat1")}

    server = start_server(tmp_path / "data", f"sqlite:///{path}", sqlite_analyze_interval=0.2,
                          **compute_settings(tmp_path))
    try:
        assert "consumers" in analyzed()  # at start (the bootstrap admin is there before it)
        with server.client() as api:
            allocate(api, metadata={"cluster": "c1"})
        assert wait_for(lambda: {"computes", "compute_metadata"} <= analyzed())
    finally:
        server.stop()


def test_metadata_filter_plan_reads_the_index(tmp_path: Path) -> None:
    """On 20,000 computes of one tenant with statistics, a selective label drives the query from
    the metadata index (not from the tenant's index over every compute)."""
    database = Database(f"sqlite:///{tmp_path / 'vimkit.db'}")
    try:
        upgrade(database)
        with database.write() as session:
            for start in range(0, 20_000, 5000):
                batch = [_compute_values(index, "rg-1", {"cluster": f"c{index % 100}", "role": "worker"})
                         for index in range(start, start + 5000)]
                inserted = session.execute(insert(ComputeRow).returning(ComputeRow.seq, ComputeRow.id,
                                                                        sort_by_parameter_order=True), batch).all()
                metadata = {row["id"]: row["body"]["metadata"] for row in batch}
                session.execute(insert(ComputeMetadataRow),
                                COMPUTE_METADATA.rows((seq, metadata[compute_id]) for seq, compute_id in inserted))
        database.refresh_planner_statistics()
        table = ComputeRow.__table__
        query = (select(table).where(table.c.resource_group_id == "rg-1",
                                     compile_filter(parse_filter("(eq,metadata/cluster,c17)"), COMPUTE_SCHEMA, "sqlite"),
                                     table.c.seq > 0)
                 .order_by(table.c.seq).limit(101))
        sql = str(query.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))
        with database.engine.connect() as connection:
            plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            found = connection.exec_driver_sql(sql).all()
        assert len(found) == 101 and all(orjson.loads(row.body)["metadata"]["cluster"] == "c17" for row in found)
        assert plan[0].startswith("SEARCH computes USING INTEGER PRIMARY KEY (rowid=?)"), plan
        assert any("USING COVERING INDEX ix_compute_metadata_lookup (key=? AND value_digest=?)" in step
                   for step in plan), plan
        assert not any("ix_computes_resource_group_id" in step for step in plan), plan
    finally:
        database.dispose()

"""``vimkit cluster``: Annex A end to end against a real server in a thread (COMPUTE_INVENTORY:
two zones of two 4-vCPU hosts, so capacity and anti-affinity limits are easy to reach).

Covers create (with subscriptions and the PM job), show, update, scale out/in/up, delete,
refusal of a cluster that cannot fit, rollback after a failure of the last node, and completion
of a half-finished create by running it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.api.test_compute import compute_settings
from tests.conftest import ADMIN_ID, ADMIN_SECRET, RunningServer, start_server
from tests.receivers import Receiver
from vimkit.cli.main import app
from vimkit.client import Client

CLUSTER = {
    "name": "c1",
    "networks": [{"name": "nodes", "subnets": [{"name": "v4", "cidr": "10.30.0.0/24"}]}],
    "nodePools": [
        {"name": "cp", "flavour": "m1.small", "count": 3, "antiAffinity": True, "image": "ubuntu",
         "userData": "#cloud-config\n", "volumes": [{"sizeGb": 2}]},
        {"name": "workers", "flavour": "m1.tiny", "count": 3, "volumes": [{"sizeGb": 1}], "labels": {"role": "w"}},
    ],
    "monitoring": {"collectionPeriod": 60, "reportingPeriod": 300},
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}", **compute_settings(tmp_path))
    yield running
    running.stop()


@pytest.fixture
def vim(server: RunningServer) -> Iterator[Client]:
    with Client(server.base_url, ADMIN_ID, ADMIN_SECRET) as client:
        yield client


class Cli:
    def __init__(self, server: RunningServer, directory: Path) -> None:
        self.env = {"VIMKIT_URL": server.base_url, "VIMKIT_CLIENT_ID": ADMIN_ID, "VIMKIT_CLIENT_SECRET": ADMIN_SECRET,
                    "VIMKIT_PROFILES": str(directory / "none.toml"), "COLUMNS": "200"}
        self.directory = directory

    def spec(self, document: dict[str, Any]) -> str:
        path = self.directory / f"{document['name']}.yaml"
        path.write_text(yaml.safe_dump(document))
        return str(path)

    def __call__(self, *args: str, code: int = 0) -> Any:
        result = CliRunner().invoke(app, list(args), env=self.env)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
        return result


@pytest.fixture
def cli(server: RunningServer, tmp_path: Path) -> Cli:
    return Cli(server, tmp_path)


def leftovers(vim: Client) -> dict[str, int]:
    counts = {"computes": len(list(vim.computes.list())), "volumes": len(list(vim.storages.list())),
              "networks": len(list(vim.networks.list())), "subnets": len(list(vim.subnets.list())),
              "ports": len(list(vim.ports.list())), "groups": len(list(vim.compute_affinity_groups.list())),
              "pm_jobs": len(list(vim.pm_jobs.list()))}
    counts.update({f"subscriptions:{api}": len(list(vim.subscriptions(api).list()))
                   for api in ("compute", "network", "storage", "faults")})
    return {name: count for name, count in counts.items() if count}


@pytest.mark.slow
def test_create_show_update_scale_delete(cli: Cli, vim: Client) -> None:
    receiver = Receiver().start()
    try:
        document = {**CLUSTER, "notifications": {"callbackUri": receiver.url}}
        spec = cli.spec(document)
        created = json.loads(cli("cluster", "create", "-f", spec, "-o", "json").stdout)
        nodes = created["nodes"]
        assert len(nodes) == 6 and {n["state"] for n in nodes} == {"ALLOCATED"}
        assert len({n["host"] for n in nodes if n["pool"] == "cp"}) == 3  # anti-affinity
        assert all(len(n["volumes"]) == 1 and n["addresses"][0].startswith("10.30.0.") for n in nodes)
        assert len(created["pmJobs"]) == 1 and created["antiAffinityGroups"]["cp"]
        assert sorted(s["api"] for s in created["subscriptions"]) == ["compute", "faults", "network", "storage"]
        job = vim.pm_jobs.get(created["pmJobs"][0])
        assert job.objectFilter == "(eq,metadata/vimkit.cluster,c1)"
        worker = vim.computes.get(next(n["computeId"] for n in nodes if n["node"] == "workers-0"))
        assert worker.metadata == {"vimkit.cluster": "c1", "vimkit.pool": "workers", "vimkit.node": "workers-0",
                                   "role": "w"}
        assert worker.computeName == "c1-workers-0"

        shown = cli("cluster", "show", "c1")
        assert "cluster c1: 6 nodes" in shown.stdout and "workers-2" in shown.stdout
        # A second create finds everything in place and creates nothing.
        again = cli("cluster", "create", "-f", spec)
        assert "0 created, 0 updated, 0 removed" in again.stderr

        # A.2.2: labels and volume sizes follow the description.
        document["nodePools"][1]["labels"] = {"role": "worker", "tier": "b"}
        document["nodePools"][1]["volumes"] = [{"sizeGb": 3}]
        updated = cli("cluster", "update", "-f", cli.spec(document))
        assert "6 updated" in updated.stderr
        assert vim.computes.get(worker.computeId).metadata["tier"] == "b"
        assert {v.sizeOfStorage for v in vim.storages.list("(eq,metadata/vimkit.pool,workers)")} == {3}

        # A.2.4: out, in, and up.
        cli("cluster", "scale", "-f", cli.spec(document), "--pool", "workers", "--count", "5")
        assert len(list(vim.computes.list("(eq,metadata/vimkit.pool,workers)"))) == 5
        faults = list(vim.subscriptions("faults").list())
        assert len(faults) == 1 and len(faults[0].filter.managedObjectIds) == 3 + 5 + 3 + 5  # computes and volumes
        cli("cluster", "scale", "-f", cli.spec(document), "--pool", "workers", "--count", "1", "--flavour", "m1.small")
        workers = list(vim.computes.list("(eq,metadata/vimkit.pool,workers)"))
        assert [(w.computeName, w.flavourId) for w in workers] == [("c1-workers-0", "m1.small")]
        assert len(list(vim.storages.list("(eq,metadata/vimkit.pool,workers)"))) == 1

        deleted = cli("cluster", "delete", "c1", "--yes")
        assert "resources deleted" in deleted.stdout
        assert leftovers(vim) == {}
        assert "no cluster 'c1'" in cli("cluster", "show", "c1", code=1).stderr
        assert receiver.notifications, "the cluster's subscriptions delivered nothing"
    finally:
        receiver.stop()


def test_a_cluster_that_cannot_fit_is_refused_before_anything_is_allocated(cli: Cli, vim: Client) -> None:
    too_many = {**CLUSTER, "name": "big", "nodePools": [
        {"name": "cp", "flavour": "m1.small", "count": 5, "antiAffinity": True},
        {"name": "workers", "flavour": "m1.large", "count": 5, "volumes": [{"sizeGb": 500}]}]}
    refused = cli("cluster", "create", "-f", cli.spec(too_many), code=1)
    message = refused.stderr
    assert "cluster 'big' does not fit" in message
    assert "5 more computes of flavour 'm1.large' needed, 4 fit" in message
    assert "wants 5 nodes on distinct hosts, 4 hosts take new computes" in message
    assert "GB of 'volume' storage needed" in message
    missing = {**CLUSTER, "name": "nope", "nodePools": [{"name": "a", "flavour": "no.such", "count": 1}]}
    assert "flavour 'no.such' does not exist" in cli("cluster", "create", "-f", cli.spec(missing), code=1).stderr
    bad = cli.directory / "bad.yaml"
    bad.write_text("name: x\nnodePools: [{name: a, flavour: m1.tiny, count: 1, colour: red}]\n")
    assert "nodePools/0/colour: Extra inputs are not permitted" in cli("cluster", "create", "-f", str(bad),
                                                                        code=2).stderr
    assert leftovers(vim) == {}


@pytest.mark.slow
def test_failure_of_the_last_node_rolls_everything_back(cli: Cli, vim: Client, server: RunningServer) -> None:
    driver = server.services.infrastructure.driver  # type: ignore[attr-defined]
    original = driver.create_compute
    calls = 0

    async def failing_last(spec: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 6:
            driver.fail_next("create_compute", code="INTERNAL", message="hypervisor lost")
        return await original(spec)

    driver.create_compute = failing_last
    try:
        failed = cli("cluster", "create", "-f", cli.spec(CLUSTER), code=1)
    finally:
        driver.create_compute = original
    assert calls == 6
    assert failed.stderr.strip().splitlines()[-1].startswith("error: INTERNAL (500)") and "hypervisor lost" in failed.stderr
    assert leftovers(vim) == {}
    # Capacity is all back: the same cluster fits and is created afterwards.
    cli("cluster", "create", "-f", cli.spec(CLUSTER))
    assert len(list(vim.computes.list())) == 6
    cli("cluster", "delete", "c1", "-y")
    assert leftovers(vim) == {}


@pytest.mark.slow
def test_rerunning_a_half_finished_create_completes_it(cli: Cli, vim: Client) -> None:
    spec = cli.spec(CLUSTER)
    cli("cluster", "create", "-f", spec)
    # What an interrupted run leaves: some nodes and volumes missing, the PM job not created yet.
    workers = sorted(vim.computes.list("(eq,metadata/vimkit.pool,workers)"), key=lambda c: c.computeName)
    kept = {c.computeId for c in vim.computes.list()} - {workers[1].computeId, workers[2].computeId}
    vim.computes.terminate(workers[1].computeId, wait=20)
    vim.computes.terminate(workers[2].computeId, wait=20)
    volume = next(iter(vim.storages.list("(eq,metadata/vimkit.node,workers-2)")))
    vim.storages.delete(volume.storageId)
    for job in vim.pm_jobs.list():
        vim.pm_jobs.delete(job.pmJobId)
    completed = cli("cluster", "create", "-f", spec)
    assert "3 created" in completed.stderr  # two computes and one volume
    computes = list(vim.computes.list())
    assert len(computes) == 6 and kept <= {c.computeId for c in computes}
    assert len(list(vim.storages.list())) == 6 and len(list(vim.pm_jobs.list())) == 1
    assert len(list(vim.networks.list())) == 1 and len(list(vim.subnets.list())) == 1
    cli("cluster", "delete", "c1", "-y")
    assert leftovers(vim) == {}

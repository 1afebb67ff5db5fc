"""Every ``vimkit`` client command end to end against a real server (in a thread, over HTTP), run
through Typer's runner; ``vimkit watch`` runs as a real process. Output formats, configuration
(environment and profile file) and exit codes included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("cli")
    running = start_server(directory / "data", f"sqlite:///{directory / 'vimkit.db'}", **compute_settings(directory))
    yield running
    running.stop()


@pytest.fixture
def env(server: RunningServer, tmp_path: Path) -> dict[str, str]:
    return {"VIMKIT_URL": server.base_url, "VIMKIT_CLIENT_ID": ADMIN_ID, "VIMKIT_CLIENT_SECRET": ADMIN_SECRET,
            "VIMKIT_PROFILES": str(tmp_path / "profiles.toml"), "COLUMNS": "200"}


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Any:
        result = self.runner.invoke(app, list(args), env=self.env)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture
def cli(env: dict[str, str]) -> Cli:
    return Cli(env)


def test_compute_commands(cli: Cli) -> None:
    network = cli.json("network", "create", "--name", "cli-net", "-m", "team=a")
    subnet = cli.json("subnet", "create", "--network", network["networkResourceId"], "--cidr", "10.7.0.0/24")
    volume = cli.json("storage", "allocate", "--size", "2", "--name", "cli-vol", "--zone", "zone-a")
    compute = cli.json("compute", "allocate", "--flavour", "m1.small", "--name", "cli-1", "--image", "ubuntu-24.04",
                       "--network", network["networkResourceId"], "--volume", volume["storageId"], "--zone", "zone-a",
                       "-m", "cluster=c1", "--wait")
    compute_id = compute["computeId"]
    assert compute["provisioningState"] == "ALLOCATED" and compute["virtualNetworkInterface"][0]["ipAddress"]
    assert compute["virtualDisks"][0]["storageId"] == volume["storageId"]
    listed = cli("compute", "list", "--filter", "(eq,metadata/cluster,c1)")
    assert "cli-1" in listed.stdout and compute_id in listed.stdout and "ALLOCATED" in listed.stdout
    assert cli.json("compute", "show", compute_id)["computeName"] == "cli-1"
    shown = yaml.safe_load(cli("compute", "show", compute_id, "-o", "yaml").stdout)
    assert shown["computeId"] == compute_id
    assert cli.json("compute", "operate", compute_id, "STOP", "--wait")["runningState"] == "STOPPED"
    snapshot = cli.json("compute", "operate", compute_id, "CREATE_SNAPSHOT", "-i", "snapshotName=s1", "--wait")
    assert snapshot["computeOperationOutputData"]["snapshotId"]
    assert cli.json("compute", "operate", compute_id, "START", "--wait")["runningState"] == "RUNNING"
    assert cli.json("compute", "scale", compute_id, "--flavour", "m1.medium", "--wait")["flavourId"] == "m1.medium"
    before = compute["hostId"]
    migrated = cli.json("compute", "migrate", compute_id, "--wait")
    assert migrated["hostId"] != before
    updated = cli.json("compute", "update", compute_id, "-m", "tier=gold", "--remove-metadata", "cluster",
                       "--detach", volume["storageId"])
    assert updated["metadata"] == {"tier": "gold"} and updated["virtualDisks"] == []
    assert cli.json("compute", "capacity", "--flavour", "m1.small")["availableInstances"] >= 1
    done = cli("compute", "terminate", compute_id, "--wait")
    assert "terminated" in done.stdout
    cli("compute", "show", compute_id, code=1)
    cli("storage", "delete", volume["storageId"])
    cli("subnet", "delete", subnet["resourceId"])
    cli("network", "delete", network["networkResourceId"])


def test_network_subnet_port_commands(cli: Cli) -> None:
    network = cli.json("network", "create", "--name", "n1", "--type", "vlan")
    network_id = network["networkResourceId"]
    assert network["networkType"] == "vlan" and network["segmentationId"]
    subnet = cli.json("subnet", "create", "--network", network_id, "--cidr", "10.8.0.0/24", "--name", "s1")
    port = cli.json("port", "create", "--network", network_id, "--ip", "10.8.0.20", "--name", "p1")
    assert port["fixedIps"][0]["ipAddress"] == "10.8.0.20"
    table = cli("port", "list").stdout
    assert "10.8.0.20" in table and "p1" in table
    assert "10.8.0.0/24" in cli("subnet", "list").stdout and "n1" in cli("network", "list").stdout
    assert cli.json("network", "update", network_id, "--name", "renamed", "-m", "a=b")["networkResourceName"] == "renamed"
    assert cli.json("subnet", "update", subnet["resourceId"], "-m", "x=y")["metadata"] == {"x": "y"}
    assert cli.json("port", "update", port["resourceId"], "-m", "x=y")["metadata"] == {"x": "y"}
    assert cli.json("network", "show", network_id)["subnetId"] == [subnet["resourceId"]]
    assert cli.json("subnet", "show", subnet["resourceId"])["cidr"] == "10.8.0.0/24"
    assert cli.json("port", "show", port["resourceId"])["networkId"] == network_id
    failed = cli("network", "delete", network_id, code=1)  # it still has a port
    assert "CONFLICT (409)" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    cli("port", "delete", port["resourceId"])
    cli("subnet", "delete", subnet["resourceId"])
    cli("network", "delete", network_id)


def test_storage_and_flavour_commands(cli: Cli) -> None:
    volume = cli.json("storage", "allocate", "--size", "3", "--zone", "zone-b", "-m", "app=db")
    storage_id = volume["storageId"]
    assert cli.json("storage", "scale", storage_id, "--size", "5", "--wait")["sizeOfStorage"] == 5
    snap = cli.json("storage", "operate", storage_id, "CREATE_SNAPSHOT", "-i", "snapshotName=n")
    snapshot_id = snap["storageOperationOutputData"]["snapshotId"]
    cli.json("storage", "operate", storage_id, "DELETE_SNAPSHOT", "-i", f"snapshotId={snapshot_id}")
    assert cli.json("storage", "update", storage_id, "--name", "data")["storageName"] == "data"
    assert cli.json("storage", "migrate", storage_id, "--zone", "zone-a")["zoneId"] == "zone-a"
    assert "data" in cli("storage", "list", "-f", "(eq,metadata/app,db)").stdout
    assert cli.json("storage", "show", storage_id)["poolId"] == "pool-a"
    cli("storage", "delete", storage_id)

    flavour = cli.json("flavour", "create", "--id", "cli.f1", "--vcpus", "2", "--memory", "1024", "--disk", "10")
    assert flavour["flavourId"] == "cli.f1"
    assert "cli.f1" in cli("flavour", "list").stdout
    assert cli.json("flavour", "show", "cli.f1")["virtualCpu"]["numVirtualCpu"] == 2
    cli("flavour", "delete", "cli.f1")
    refused = cli("flavour", "create", "--id", "bad", "--vcpus", "0", "--memory", "1", code=1)
    assert "INVALID_INPUT (400)" in refused.stderr and "virtualCpu/numVirtualCpu" in refused.stderr


@pytest.mark.slow
def test_alarm_pm_and_threshold_commands(cli: Cli, server: RunningServer) -> None:
    compute = cli.json("compute", "allocate", "--flavour", "m1.tiny", "--wait")
    compute_id = compute["computeId"]
    with server.client() as admin:
        fault = admin.post("/admin/v1/faults", json={"kind": "COMPUTE_CRASH", "targetId": compute_id}).json()
    deadline = time.monotonic() + 15
    while not (alarms := cli.json("alarm", "active")) and time.monotonic() < deadline:
        time.sleep(0.1)
    alarm = next(a for a in alarms if a["managedObjectId"] == compute_id)
    assert "computeCrashed" in cli("alarm", "list").stdout
    assert cli.json("alarm", "show", alarm["alarmId"])["probableCause"] == "computeCrashed"
    assert cli.json("alarm", "ack", alarm["alarmId"])["ackState"] == "ACKNOWLEDGED"
    assert cli.json("alarm", "ack", alarm["alarmId"], "--undo")["ackState"] == "UNACKNOWLEDGED"
    with server.client() as admin:
        admin.delete(f"/admin/v1/faults/{fault['faultId'] if 'faultId' in fault else fault['id']}")

    job = cli.json("pm-job", "create", "--object", compute_id, "--group", "VirtualisedComputeResource",
                   "--collection-period", "5", "--reporting-period", "5")
    assert job["objectInstanceIds"] == [compute_id]
    assert job["pmJobId"] in cli("pm-job", "list").stdout
    assert cli.json("pm-job", "show", job["pmJobId"])["collectionPeriod"] == 5
    deadline = time.monotonic() + 30
    while not (reports := cli.json("pm-job", "reports", job["pmJobId"])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert reports, "no report within 30 s"
    report = cli("pm-job", "report", job["pmJobId"], reports[0]["reportId"])
    assert "VCpuUsageMean" in report.stdout
    cli("pm-job", "delete", job["pmJobId"])

    threshold = cli.json("threshold", "create", "--object", compute_id, "--metric", "VCpuUsageMean",
                         "--value", "80", "--hysteresis", "5")
    assert threshold["thresholdDetails"] == {"thresholdValue": 80, "hysteresis": 5}
    assert "VCpuUsageMean" in cli("threshold", "list").stdout
    assert cli.json("threshold", "show", threshold["thresholdId"])["performanceMetric"] == "VCpuUsageMean"
    cli("threshold", "delete", threshold["thresholdId"])
    cli("compute", "terminate", compute_id, "--wait")


def test_subscription_commands(cli: Cli) -> None:
    receiver = Receiver().start()
    try:
        created = cli.json("subscription", "create", "--api", "storage", "--callback", receiver.url,
                           "--change-type", "ADDED", "-m", "app=x")
        assert created["filter"] == {"changeTypes": ["ADDED"], "metadata": {"app": "x"}}
        assert receiver.url in cli("subscription", "list", "--api", "storage").stdout
        assert cli.json("subscription", "show", created["id"], "--api", "storage")["deliveryStatus"]["state"] == "ACTIVE"
        volume = cli.json("storage", "allocate", "--size", "1", "-m", "app=x")
        deadline = time.monotonic() + 10
        while not receiver.notifications and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.notifications[0]["virtualisedResourceId"] == volume["storageId"]
        cli("subscription", "delete", created["id"], "--api", "storage")
        assert cli.json("subscription", "list", "--api", "storage") == []
        cli("storage", "delete", volume["storageId"])
        bad = cli("subscription", "create", "--api", "nope", "--callback", receiver.url, code=2)
        assert "no subscriptions on 'nope'" in bad.stderr
    finally:
        receiver.stop()


def test_configuration_profiles_and_exit_codes(cli: Cli, env: dict[str, str], server: RunningServer,
                                               tmp_path: Path) -> None:
    Path(env["VIMKIT_PROFILES"]).write_text(
        f'[default]\nurl = "http://127.0.0.1:9"\n\n[lab]\nurl = "{server.base_url}"\n'
        f'client_id = "{ADMIN_ID}"\nclient_secret = "{ADMIN_SECRET}"\n')
    bare = Cli({"VIMKIT_PROFILES": env["VIMKIT_PROFILES"], "COLUMNS": "200"})
    assert "m1.tiny" in bare("flavour", "list", "--profile", "lab").stdout
    assert "no credentials" in bare("flavour", "list", code=2).stderr
    assert "no profile 'prod'" in bare("flavour", "list", "--profile", "prod", code=2).stderr
    # The variables win over the default profile.
    assert "m1.tiny" in cli("flavour", "list").stdout
    unreachable = Cli({**env, "VIMKIT_URL": "http://127.0.0.1:9"})("flavour", "list", code=3)
    assert unreachable.stderr.startswith("error: cannot reach the VIM")
    assert "UNAUTHORIZED" in Cli({**env, "VIMKIT_CLIENT_SECRET": "wrong"})("flavour", "list", code=1).stderr
    assert "no VIM address" in Cli({"VIMKIT_PROFILES": str(tmp_path / "missing.toml")})("flavour", "list",
                                                                                         code=2).stderr
    missing = cli("compute", "show", "nope", code=1)
    assert missing.stderr.strip() == "error: NOT_FOUND (404): compute 'nope' does not exist"
    assert "--flavour is required" in cli("compute", "allocate", code=2).stderr


@pytest.mark.slow
def test_watch_prints_notifications_and_unsubscribes(env: dict[str, str], cli: Cli) -> None:
    command = [str(Path(sys.executable).with_name("vimkit")), "watch", "--api", "network", "--count", "1",
               "--timeout", "60", "-o", "json"]
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        while not cli.json("subscription", "list", "--api", "network") and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        network = cli.json("network", "create", "--name", "watched")
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    notification = json.loads(out.splitlines()[0])
    assert notification["virtualisedResourceId"] == network["networkResourceId"]
    assert notification["changeType"] == "ADDED"
    assert cli.json("subscription", "list", "--api", "network") == []
    cli("network", "delete", network["networkResourceId"])


def test_watch_table_line() -> None:
    from vimkit.cli.watch import describe

    line = describe({"notificationType": "AlarmNotification", "timeStamp": "2026-11-25T20:41:07.198Z",
                     "alarm": {"perceivedSeverity": "MAJOR", "probableCause": "computeCrashed",
                               "managedObjectType": "VirtualCompute", "managedObjectId": "c1"}})
    assert line == "20:41:07.198 AlarmNotification MAJOR computeCrashed on VirtualCompute c1"

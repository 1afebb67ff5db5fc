"""Alarms about computes and their NICs (issue 9 with computes): each fault kind injected through
``POST /admin/v1/faults``, its alarm, root-cause correlation, the compute's state, both
notifications, clearing on repair, tenant isolation, and a restart in the middle of a fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_compute import WAIT, allocate, compute_settings, network_with_subnet, operate, wait_for
from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver


@pytest.fixture
def avim(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}", **compute_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()


def alarms(api: httpx.Client, **filters: str) -> list[dict]:
    query = ";".join(f"(eq,{name},{value})" for name, value in filters.items())
    response = api.get("/faults/v1/alarms", params={"filter": query} if query else {})
    assert response.status_code == 200, response.text
    return response.json()


def active(api: httpx.Client, object_id: str) -> list[dict]:
    return [a for a in alarms(api, managedObjectId=object_id) if a["perceivedSeverity"] != "CLEARED"]


def inject(admin: httpx.Client, kind: str, target: str) -> str:
    response = admin.post("/admin/v1/faults", json={"kind": kind, "targetId": target})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_compute_crash_raises_and_clears_an_alarm(avim: RunningServer) -> None:
    owner, other = avim.new_consumer(), avim.new_consumer()
    receiver = Receiver().start()
    try:
        with owner.client() as api, avim.client() as admin, other.client() as stranger:
            assert api.post("/faults/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            compute_id = allocate(api)["computeId"]
            fault_id = inject(admin, "COMPUTE_CRASH", compute_id)
            [alarm] = wait_for(lambda: active(api, compute_id))
            assert alarm["probableCause"] == "computeCrashed" and alarm["perceivedSeverity"] == "MAJOR"
            assert alarm["managedObjectType"] == "VirtualCompute" and alarm["faultType"] == "COMPUTE_CRASH"
            assert alarm["eventType"] == "PROCESSING_ERROR_ALARM" and alarm["correlatedAlarmId"] == []
            compute = api.get(f"/compute/v1/computes/{compute_id}").json()
            assert compute["runningState"] == "CRASHED" and compute["operationalState"] == "DISABLED"
            assert alarms(stranger, managedObjectId=compute_id) == []
            assert_problem(stranger.get(f"/faults/v1/alarms/{alarm['alarmId']}"), 404)
            # Repairing the fault restarts the guest: RUNNING again and the alarm cleared.
            assert admin.delete(f"/admin/v1/faults/{fault_id}").status_code == 204
            assert wait_for(lambda: not active(api, compute_id))
            assert api.get(f"/compute/v1/computes/{compute_id}").json()["runningState"] == "RUNNING"
            notes = receiver.wait_for(2)
            assert notes[0]["notificationType"] == "AlarmNotification"
            assert notes[0]["alarm"]["alarmId"] == alarm["alarmId"]
            assert notes[1]["notificationType"] == "AlarmClearedNotification"
            assert notes[1]["alarmId"] == alarm["alarmId"]
            assert alarms(api, managedObjectId=compute_id, perceivedSeverity="CLEARED")[0]["alarmId"] == alarm["alarmId"]
            # Crash again; this time the consumer restarts it: the START clears the alarm.
            inject(admin, "COMPUTE_CRASH", compute_id)
            assert wait_for(lambda: active(api, compute_id))
            assert operate(api, compute_id, "START")["runningState"] == "RUNNING"
            assert not active(api, compute_id)
    finally:
        receiver.stop()


def test_host_down_is_the_root_cause_of_its_computes_alarms(avim: RunningServer) -> None:
    owner = avim.new_consumer()
    with owner.client() as api, avim.client() as admin:
        on_host = [allocate(api, locationConstraints={"hostId": "host-a1"})["computeId"] for _ in range(2)]
        elsewhere = allocate(api, locationConstraints={"hostId": "host-b1"})["computeId"]
        fault_id = inject(admin, "HOST_DOWN", "host-a1")
        [host_alarm] = wait_for(lambda: active(admin, "host-a1"))
        assert host_alarm["isRootCause"] is True and host_alarm["probableCause"] == "hostUnreachable"
        compute_alarms = wait_for(lambda: [a for c in on_host for a in active(api, c)] if all(
            active(api, c) for c in on_host) else [])
        assert len(compute_alarms) == 2
        assert all(a["correlatedAlarmId"] == [host_alarm["alarmId"]] and a["isRootCause"] is False
                   for a in compute_alarms)
        assert not active(api, elsewhere)
        # The consumer sees its computes' alarms, and the host only as their root cause.
        assert_problem(api.get(f"/faults/v1/alarms/{host_alarm['alarmId']}"), 404)
        assert alarms(api, managedObjectId="host-a1") == []
        # The host comes back; its alarm clears; the computes stay CRASHED until started.
        assert admin.delete(f"/admin/v1/faults/{fault_id}").status_code == 204
        assert wait_for(lambda: not active(admin, "host-a1"))
        assert all(active(api, c) for c in on_host)
        for compute_id in on_host:
            assert operate(api, compute_id, "START")["runningState"] == "RUNNING"
            assert not active(api, compute_id)


def test_link_down_alarms_ports_behind_a_host(avim: RunningServer) -> None:
    owner = avim.new_consumer()
    with owner.client() as api, avim.client() as admin:
        network_id, _ = network_with_subnet(api)
        compute = allocate(api, locationConstraints={"hostId": "host-b2"}, interfaceData=[{"networkId": network_id}])
        port_id = compute["virtualNetworkInterface"][0]["networkPortId"]
        fault_id = inject(admin, "NETWORK_LINK_DOWN", "host-b2")
        [root] = wait_for(lambda: active(admin, "host-b2"))
        assert root["probableCause"] == "linkDown" and root["isRootCause"] is True
        [port_alarm] = wait_for(lambda: active(api, port_id))
        assert port_alarm["managedObjectType"] == "VirtualNetworkPort"
        assert port_alarm["correlatedAlarmId"] == [root["alarmId"]]
        assert port_alarm["eventType"] == "COMMUNICATIONS_ALARM"
        nic = lambda: api.get(f"/compute/v1/computes/{compute['computeId']}").json()["virtualNetworkInterface"][0]  # noqa: E731
        assert wait_for(lambda: nic()["operationalState"] == "DISABLED")
        assert admin.delete(f"/admin/v1/faults/{fault_id}").status_code == 204
        assert wait_for(lambda: not active(api, port_id) and not active(admin, "host-b2"))
        assert wait_for(lambda: nic()["operationalState"] == "ENABLED")


def test_a_task_stuck_past_its_deadline_raises_an_alarm(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}",
                          **compute_settings(tmp_path, sim_latency_scale=100.0, compute_task_alarm_seconds=0.05))
    try:
        with server.new_consumer().client() as api:
            compute_id = allocate(api)["computeId"]
            [cleared] = wait_for(lambda: alarms(api, managedObjectId=compute_id, perceivedSeverity="CLEARED"))
            assert cleared["probableCause"] == "transitionTimeout" and "ALLOCATE" in cleared["faultDetails"][0]
            api.post(f"/compute/v1/computes/{compute_id}/operate", json={"computeOperation": "REBOOT"})
            assert wait_for(lambda: active(api, compute_id))
            assert wait_for(lambda: not active(api, compute_id), 30)
    finally:
        server.stop()


def test_terminating_a_compute_clears_its_alarms_and_a_restart_keeps_them(tmp_path: Path) -> None:
    settings = compute_settings(tmp_path)
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}", **settings)
    try:
        consumer = server.new_consumer()
        with consumer.client() as api, server.client() as admin:
            keep, drop = allocate(api)["computeId"], allocate(api)["computeId"]
            for compute_id in (keep, drop):
                inject(admin, "COMPUTE_CRASH", compute_id)
            assert wait_for(lambda: active(api, keep) and active(api, drop))
            assert api.delete(f"/compute/v1/computes/{drop}", headers=WAIT).status_code == 204
            assert not active(api, drop)
    finally:
        server.stop()
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}", **settings)
    try:
        with httpx.Client(base_url=server.base_url, headers={
                "Authorization": f"Bearer {server.token(consumer.client_id, consumer.client_secret)}"}) as api:
            assert len(active(api, keep)) == 1  # neither lost nor duplicated by the restart
            assert api.get(f"/compute/v1/computes/{keep}").json()["runningState"] == "CRASHED"
    finally:
        server.stop()

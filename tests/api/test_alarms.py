"""Fault management through HTTP: alarms from injected faults, capacity and notification delivery."""

from __future__ import annotations

import time
from pathlib import Path

from tests.api.test_notifications import FAST
from tests.conftest import RunningServer, assert_problem, start_server
from tests.receivers import Receiver


def _wait(api, params: dict, count: int, timeout: float = 8.0) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        items = api.get("/faults/v1/alarms", params=params).json()
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def test_host_down_raises_updates_and_clears_one_alarm(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
    receiver = Receiver().start()
    try:
        with server.client() as api:
            assert api.post("/faults/v1/subscriptions", json={"callbackUri": receiver.url}).status_code == 201
            rebuilt = receiver.wait_for(0)
            host_id = api.get("/admin/v1/hosts").json()[5]["hostId"]
            fault = api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": host_id}).json()
            (alarm,) = _wait(api, {"filter": f"(eq,managedObjectId,{host_id})"}, 1)
            assert alarm["perceivedSeverity"] == "CRITICAL" and alarm["eventType"] == "EQUIPMENT_ALARM"
            assert alarm["probableCause"] == "hostUnreachable" and alarm["isRootCause"] is True
            assert alarm["managedObjectType"] == "Host" and alarm["ackState"] == "UNACKNOWLEDGED"
            one = api.get(f"/faults/v1/alarms/{alarm['alarmId']}")
            assert one.status_code == 200 and one.json()["alarmId"] == alarm["alarmId"]
            assert_problem(api.patch(f"/faults/v1/alarms/{alarm['alarmId']}", json={"ackState": "ACKNOWLEDGED"},
                                     headers={"If-Match": '"stale"'}), 412)
            acked = api.patch(f"/faults/v1/alarms/{alarm['alarmId']}", json={"ackState": "ACKNOWLEDGED"},
                              headers={"If-Match": one.headers["etag"]})
            assert acked.status_code == 200 and acked.json()["ackState"] == "ACKNOWLEDGED"
            assert acked.json()["alarmAcknowledgedTime"]
            assert_problem(api.patch(f"/faults/v1/alarms/{alarm['alarmId']}", json={"ackState": "MAYBE"}), 400, "ackState")
            # a second HOST_DOWN on the same host is the same fault: no second alarm
            api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": host_id})
            time.sleep(0.3)
            assert len(api.get("/faults/v1/alarms", params={"filter": f"(eq,managedObjectId,{host_id})"}).json()) == 1
            for item in api.get("/admin/v1/faults").json():
                assert api.delete(f"/admin/v1/faults/{item['id']}").status_code == 204
            cleared = _wait(api, {"filter": "(eq,perceivedSeverity,CLEARED)"}, 1)
            assert cleared[0]["alarmId"] == alarm["alarmId"] and cleared[0]["alarmClearedTime"]
            assert api.get("/faults/v1/alarms", params={"filter": "(neq,perceivedSeverity,CLEARED)"}).json() == []
        kinds = [n["notificationType"] for n in receiver.wait_for(len(rebuilt) + 3)]
        assert "AlarmNotification" in kinds and "AlarmClearedNotification" in kinds
        raised = next(n for n in receiver.notifications if n["notificationType"] == "AlarmNotification")
        assert raised["alarm"]["alarmId"] == alarm["alarmId"]
        cleared_note = next(n for n in receiver.notifications if n["notificationType"] == "AlarmClearedNotification")
        assert cleared_note["alarmId"] == alarm["alarmId"] and cleared_note["alarmClearedTime"]
        assert fault["kind"] == "HOST_DOWN"
    finally:
        receiver.stop()
        server.stop()


def test_restart_mid_fault_keeps_one_alarm_and_announces_the_rebuild(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
    receiver = Receiver().start()
    try:
        with server.client() as api:
            api.post("/faults/v1/subscriptions", json={"callbackUri": receiver.url,
                                                       "filter": {"notificationTypes": ["AlarmListRebuiltNotification"]}})
            host_id = api.get("/admin/v1/hosts").json()[2]["hostId"]
            api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": host_id})
            (before,) = _wait(api, {"filter": f"(eq,managedObjectId,{host_id})"}, 1)
        server.stop()
        server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
        with server.client() as api:
            after = api.get("/faults/v1/alarms", params={"filter": f"(eq,managedObjectId,{host_id})"}).json()
            assert [a["alarmId"] for a in after] == [before["alarmId"]]
            assert after[0]["perceivedSeverity"] == "CRITICAL"
        note = receiver.wait_for(1)[0]
        assert note["notificationType"] == "AlarmListRebuiltNotification"
    finally:
        receiver.stop()
        server.stop()


def test_consumers_see_only_their_alarms(sqlite_vim: RunningServer) -> None:
    with sqlite_vim.client() as api:
        host_id = api.get("/admin/v1/hosts").json()[0]["hostId"]
        api.post("/admin/v1/faults", json={"kind": "HOST_DOWN", "targetId": host_id})
        (alarm,) = _wait(api, {"filter": f"(eq,managedObjectId,{host_id})"}, 1)
    consumer = sqlite_vim.new_consumer()
    with consumer.client() as api:
        assert api.get("/faults/v1/alarms").json() == []
        assert_problem(api.get(f"/faults/v1/alarms/{alarm['alarmId']}"), 404)
        assert_problem(api.patch(f"/faults/v1/alarms/{alarm['alarmId']}", json={"ackState": "ACKNOWLEDGED"}), 404)


def test_capacity_threshold_alarm(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", sim_latency_scale=0,
                          alarm_capacity_threshold=0.05, alarm_check_interval=0.1, **FAST)
    try:
        with server.client() as api:
            zone_hosts = api.get("/admin/v1/hosts", params={"zoneId": "zone-a"}).json()
            for host in zone_hosts:
                api.patch(f"/admin/v1/hosts/{host['hostId']}", json={"adminState": "MAINTENANCE"})
            # no allocation yet: nothing is allocated, so no capacity alarm
            time.sleep(0.5)
            assert api.get("/faults/v1/alarms", params={"filter": "(eq,probableCause,capacityThresholdExceeded)"}).json() == []
        infra = server.services.infrastructure  # type: ignore[attr-defined]
        from vimkit.placement import PlacementRequest

        infra.placement.claim("probe-compute", PlacementRequest(vcpus=64, memory_mb=1024, zone_ids=frozenset({"zone-b"})))
        with server.client() as api:
            alarms = _wait(api, {"filter": "(eq,managedObjectId,zone-b)"}, 1)
            assert alarms[0]["perceivedSeverity"] == "MAJOR" and alarms[0]["eventType"] == "QOS_ALARM"
            infra.placement.release("probe-compute")
            cleared = _wait(api, {"filter": "(eq,managedObjectId,zone-b);(eq,perceivedSeverity,CLEARED)"}, 1)
            assert cleared[0]["alarmId"] == alarms[0]["alarmId"]
    finally:
        server.stop()


def test_failing_subscription_raises_and_clears_an_alarm(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, notify_give_up_seconds=0.3, **FAST)
    broken = Receiver().start()
    consumer = server.new_consumer()
    try:
        with consumer.client() as api:
            subscription = api.post("/compute-info/v1/subscriptions", json={"callbackUri": broken.url}).json()
            broken.behaviour.fail_forever = True
            api.post("/compute/v1/flavours", json={"flavourId": "x1", "virtualCpu": {"numVirtualCpu": 1},
                                                   "virtualMemory": {"virtualMemSize": 256}})
            (alarm,) = _wait(api, {"filter": f"(eq,managedObjectId,{subscription['id']})"}, 1)
            assert alarm["probableCause"] == "notificationDeliveryFailure" and alarm["perceivedSeverity"] == "MAJOR"
            assert alarm["eventType"] == "COMMUNICATIONS_ALARM"
            broken.behaviour.fail_forever = False
            broken.wait_for(1)
            cleared = _wait(api, {"filter": f"(eq,managedObjectId,{subscription['id']});(eq,perceivedSeverity,CLEARED)"}, 1)
            assert cleared and cleared[0]["alarmId"] == alarm["alarmId"]
        other = server.new_consumer()
        with other.client() as api:
            assert api.get("/faults/v1/alarms").json() == []
    finally:
        broken.stop()
        server.stop()


def test_storage_failure_raises_an_alarm_for_the_volume_owner(tmp_path: Path, database_url: str) -> None:
    server = start_server(tmp_path / "data", database_url, sim_latency_scale=0, **FAST)
    try:
        owner, stranger = server.new_consumer("owner"), server.new_consumer("stranger")
        with owner.client() as api:
            created = api.post("/storage/v1/storages", json={
                "storageName": "data", "storageData": {"typeOfStorage": "volume", "sizeOfStorage": 1}})
            assert created.status_code == 201, created.text
            volume_id = created.json()["storageId"]
        with server.client() as admin:
            fault = admin.post("/admin/v1/faults", json={"kind": "STORAGE_FAILURE", "targetId": volume_id})
            assert fault.status_code == 201, fault.text
        with owner.client() as api:
            (alarm,) = _wait(api, {"filter": f"(eq,managedObjectId,{volume_id})"}, 1)
            assert alarm["probableCause"] == "storageFailure" and alarm["managedObjectType"] == "VirtualStorage"
            assert alarm["perceivedSeverity"] == "MAJOR"
        with stranger.client() as api:
            assert api.get("/faults/v1/alarms").json() == []
        with server.client() as admin:
            assert admin.delete(f"/admin/v1/faults/{fault.json()['id']}").status_code == 204
        with owner.client() as api:
            cleared = _wait(api, {"filter": f"(eq,managedObjectId,{volume_id});(eq,perceivedSeverity,CLEARED)"}, 1)
            assert cleared and cleared[0]["alarmId"] == alarm["alarmId"]
    finally:
        server.stop()

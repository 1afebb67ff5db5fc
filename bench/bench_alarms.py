"""Alarm list benchmark: `GET /faults/v1/alarms` with SOL filters over 100,000 stored alarms.

Loads the alarms through the store (setup, not timed), starts ``vimkit serve`` and drives it
with wrk over loopback (see bench_flavours.py for the load generator).

    .venv/bin/python bench/bench_alarms.py [--alarms 100000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_flavours import ADMIN, drive_wrk, free_port  # noqa: E402

SEVERITIES = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "CLEARED")


def load_alarms(data_dir: Path, count: int) -> None:
    from vimkit.app import build_services
    from vimkit.config import Settings
    from vimkit.store.alarm_tables import AlarmRow
    from vimkit.store.repository import utcnow

    services = build_services(Settings(data_dir=data_dir, admin_client_id=ADMIN[0], admin_client_secret=ADMIN[1]))
    now = utcnow()
    stamp = now.isoformat().replace("+00:00", "Z")
    with services.database.write() as session:
        rows = []
        for index in range(count):
            severity = SEVERITIES[index % len(SEVERITIES)]
            managed = f"obj-{index % 20000:05d}"
            alarm_id = str(uuid.uuid4())
            rows.append({
                "id": alarm_id, "resource_group_id": "system", "created_at": now, "updated_at": now, "version": 1,
                "managed_object_id": managed, "probable_cause": f"cause-{index}",
                "active_key": None if severity == "CLEARED" else f"{managed}:cause-{index}",
                "perceived_severity": severity,
                "cleared_at": now if severity == "CLEARED" else None,
                "body": {"alarmId": alarm_id, "managedObjectId": managed, "managedObjectType": "Host",
                         "alarmRaisedTime": stamp, "ackState": "UNACKNOWLEDGED", "perceivedSeverity": severity,
                         "eventTime": stamp, "eventType": "EQUIPMENT_ALARM", "probableCause": f"cause-{index}",
                         "isRootCause": False, "correlatedAlarmId": [], "faultDetails": []},
            })
        session.execute(AlarmRow.__table__.insert(), rows)
    services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alarms", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vimkit-bench-alarms-") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        load_alarms(data_dir, args.alarms)
        print(f"loaded {args.alarms} alarms in {time.perf_counter() - started:.1f} s")
        port = free_port()
        env = {**os.environ, "VIMKIT_ADMIN_CLIENT_ID": ADMIN[0], "VIMKIT_ADMIN_CLIENT_SECRET": ADMIN[1],
               "VIMKIT_LOG_LEVEL": "warning"}
        server = subprocess.Popen([sys.executable, "-m", "vimkit.cli.main", "serve", "--port", str(port),
                                   "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=ADMIN).json()["access_token"]
            scenarios = {
                "one managed object: (eq,managedObjectId,obj-<n>)": "/faults/v1/alarms?filter=(eq,managedObjectId,obj-{n})",
                "active critical, first page: (eq,perceivedSeverity,CRITICAL)": "/faults/v1/alarms?filter=(eq,perceivedSeverity,CRITICAL)",
                "severity + object: (in,perceivedSeverity,MAJOR,MINOR);(eq,managedObjectId,obj-<n>)":
                    "/faults/v1/alarms?filter=(in,perceivedSeverity,MAJOR,MINOR);(eq,managedObjectId,obj-{n})",
            }
            print(f"vimkit alarm list benchmark: {args.alarms} alarms, {args.concurrency} connections (wrk), "
                  f"{args.seconds:.0f} s per scenario, SQLite")
            for name, template in scenarios.items():
                drive_wrk(base, token, template, 9999, 1, args.concurrency, data_dir)
                result = drive_wrk(base, token, template, 9999, args.seconds, args.concurrency, data_dir)
                print(f"{name}\n    {result['rps']:8.0f} req/s   p50 {result['p50_ms']:6.2f} ms   "
                      f"p99 {result['p99_ms']:6.2f} ms   ({result['requests']} requests, {result['errors']} errors)")
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()

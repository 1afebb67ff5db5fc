"""``vimkit watch``: print notifications live.

It starts a :class:`~vimkit.client.NotificationReceiver` on 127.0.0.1 (the VIM must be able to
reach it, so this is for a VIM on the same machine or with ``--host`` an address the VIM can
reach), protected by a random Basic password given to the VIM in the subscriptions, subscribes on
each ``--api`` and unsubscribes when it stops (Ctrl-C, SIGTERM, ``--count`` or ``--timeout``).
"""

import json
import secrets
import signal
import sys
import time
from typing import Any, Optional

import typer
from rich.console import Console

from vimkit.cli.context import Ctx, Output, command, err, parse_pairs
from vimkit.cli.resources import MetadataOpt

DEFAULT_APIS = ["compute", "network", "storage", "faults"]


def describe(notification: dict[str, Any]) -> str:
    """One line per notification: when, what and about which object."""
    kind = notification.get("notificationType", "?")
    stamp = str(notification.get("timeStamp", ""))[11:23]
    if kind == "VirtualisedResourceChangeNotification":
        data = notification.get("changedResourceData") or {}
        state = data.get("provisioningState") or ""
        running = data.get("runningState")
        detail = f"{notification.get('resourceType')} {notification.get('changeType')} " \
                 f"{notification.get('virtualisedResourceId')} {state}{'/' + running if running else ''}"
    elif kind == "InformationChangeNotification":
        detail = f"{notification.get('changeType')} {notification.get('resourceTypeId')}"
    elif kind == "AlarmNotification":
        alarm = notification.get("alarm") or {}
        detail = f"{alarm.get('perceivedSeverity')} {alarm.get('probableCause')} on {alarm.get('managedObjectType')} " \
                 f"{alarm.get('managedObjectId')}"
    elif kind == "AlarmClearedNotification":
        detail = f"cleared {notification.get('alarmId')}"
    elif kind == "ThresholdCrossedNotification":
        detail = f"{notification.get('performanceMetric')} {notification.get('crossingDirection')} " \
                 f"{notification.get('performanceValue')} on {notification.get('objectInstanceId')}"
    elif kind == "PerformanceInformationAvailableNotification":
        detail = f"report of {notification.get('pmJobId')} for {len(notification.get('objectInstanceIds') or [])} objects"
    else:
        detail = ""
    return f"{stamp} {kind} {detail}".rstrip()


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def watch(ctx: Ctx,
          api: Optional[list[str]] = typer.Option(None, "--api", help="API to watch; repeatable (default compute, "
                                                  "network, storage, faults)."),
          metadata: Optional[list[str]] = MetadataOpt,
          host: str = typer.Option("127.0.0.1", "--host", help="Address the receiver listens on."),
          port: int = typer.Option(0, "--port", help="Port of the receiver (default: a free one)."),
          count: Optional[int] = typer.Option(None, "--count", help="Stop after this many notifications."),
          timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds.")) -> None:
    """Print notifications as they arrive; unsubscribes on exit."""
    from vimkit.client import NotificationReceiver

    apis = api or DEFAULT_APIS
    credentials = ("vimkit-watch", secrets.token_urlsafe(18))
    receiver = NotificationReceiver(basic=credentials)
    url = receiver.serve_in_thread(host, port)
    client = ctx.client()
    created: list[tuple[str, str]] = []
    out = Console(highlight=False, soft_wrap=True)
    _stop_on_sigterm()
    try:
        for name in apis:
            body: dict[str, Any] = {"callbackUri": url, "authentication": {
                "authType": ["BASIC"], "paramsBasic": {"userName": credentials[0], "password": credentials[1]}}}
            if metadata and name in ("compute", "network", "storage"):
                body["filter"] = {"metadata": parse_pairs(metadata)}
            created.append((name, client.subscriptions(name).create(body).id))
        err.print(f"watching {', '.join(apis)} on {url} (Ctrl-C to stop)", highlight=False)
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or seen < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                notification = receiver.queue.get(timeout=min(left, 0.5) if left is not None else 0.5)
            except Exception:  # queue.Empty: look at the clock again
                continue
            seen += 1
            if ctx.output is Output.table:
                out.print(describe(notification))
            else:
                sys.stdout.write(json.dumps(notification) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        for name, subscription_id in created:
            try:
                client.subscriptions(name).delete(subscription_id)
            except Exception as exc:  # keep removing the others; say which one stayed
                err.print(f"could not remove subscription {subscription_id} ({name}): {exc}", highlight=False)
        receiver.stop()


def register_watch(app: typer.Typer) -> None:
    command(app, "watch")(watch)

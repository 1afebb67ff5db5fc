"""``vimkit network|subnet|port|alarm|pm-job|threshold|subscription …`` (docs/cli.md)."""

from pathlib import Path
from typing import Any, Optional

import typer

from vimkit.cli.context import CliError, Ctx, command, load_body, parse_pairs
from vimkit.cli.resources import FileOpt, FilterOpt, MetadataOpt, crud

NETWORK_COLUMNS = [("ID", "networkResourceId"), ("NAME", "networkResourceName"), ("TYPE", "networkType"),
                   ("SEGMENT", "segmentationId"), ("SUBNETS", "subnetId"), ("SHARED", "isShared"),
                   ("STATE", "provisioningState")]
SUBNET_COLUMNS = [("ID", "resourceId"), ("NAME", "networkResourceName"), ("NETWORK", "networkId"), ("CIDR", "cidr"),
                  ("GATEWAY", "gatewayIp"), ("STATE", "provisioningState")]
PORT_COLUMNS = [("ID", "resourceId"), ("NAME", "networkResourceName"), ("NETWORK", "networkId"),
                ("MAC", "macAddress"), ("ADDRESSES", "fixedIps/ipAddress"), ("ATTACHED TO", "attachedResourceId"),
                ("STATE", "provisioningState")]
ALARM_COLUMNS = [("ID", "alarmId"), ("OBJECT", "managedObjectType"), ("OBJECT ID", "managedObjectId"),
                 ("CAUSE", "probableCause"), ("SEVERITY", "perceivedSeverity"), ("ACK", "ackState"),
                 ("RAISED", "alarmRaisedTime")]
PM_JOB_COLUMNS = [("ID", "pmJobId"), ("OBJECT TYPE", "objectType"), ("OBJECTS", "objectInstanceIds"),
                  ("FILTER", "objectFilter"), ("METRICS", "performanceMetric"), ("GROUPS", "performanceMetricGroup"),
                  ("COLLECT S", "collectionPeriod"), ("REPORT S", "reportingPeriod"), ("STATE", "state")]
REPORT_COLUMNS = [("ID", "reportId"), ("FROM", "periodStart"), ("TO", "periodEnd"), ("OBJECTS", "objectCount")]
THRESHOLD_COLUMNS = [("ID", "thresholdId"), ("OBJECT TYPE", "objectType"), ("OBJECTS", "objectInstanceIds"),
                     ("METRIC", "performanceMetric"), ("VALUE", "thresholdDetails/thresholdValue"),
                     ("HYSTERESIS", "thresholdDetails/hysteresis")]
SUBSCRIPTION_COLUMNS = [("ID", "id"), ("CALLBACK", "callbackUri"), ("FILTER", "filter"),
                        ("DELIVERY", "deliveryStatus/state"), ("PENDING", "deliveryStatus/pendingCount")]

network_app = typer.Typer(help="Virtual networks.", no_args_is_help=True)
subnet_app = typer.Typer(help="Subnets of virtual networks.", no_args_is_help=True)
port_app = typer.Typer(help="Virtual network ports.", no_args_is_help=True)
alarm_app = typer.Typer(help="Alarms (fault management).", no_args_is_help=True)
pm_job_app = typer.Typer(help="Performance management jobs and their reports.", no_args_is_help=True)
threshold_app = typer.Typer(help="Performance thresholds.", no_args_is_help=True)
subscription_app = typer.Typer(help="Notification subscriptions of every API.", no_args_is_help=True)

ApiOpt = typer.Option("compute", "--api", help="compute, network, storage, compute-info, network-info, "
                      "storage-info, faults or performance.")


def with_metadata(body: dict[str, Any], metadata: Optional[list[str]], name: Optional[str],
                  name_key: str = "networkResourceName") -> dict[str, Any]:
    if name:
        body[name_key] = name
    if metadata:
        body["metadata"] = {**body.get("metadata", {}), **parse_pairs(metadata)}
    return body


def metadata_patch(name: Optional[str], metadata: Optional[list[str]], remove: Optional[list[str]]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    if name:
        patch["networkResourceName"] = name
    changes: dict[str, Any] = {**parse_pairs(metadata), **{key: None for key in remove or []}}
    if changes:
        patch["metadata"] = changes
    if not patch:
        raise CliError("nothing to change: give --name, --metadata or --remove-metadata")
    return patch


RemoveOpt = typer.Option(None, "--remove-metadata", help="Key to remove; repeatable.")
NameOpt = typer.Option(None, "--name")

# --------------------------------------------------------------------------- networks, subnets, ports

def register_update(app: typer.Typer, attribute: str, noun: str) -> None:
    @command(app, "update", help=f"Update a {noun}'s name or metadata.")
    def update(ctx: Ctx, resource_id: str = typer.Argument(..., metavar="ID"), name: Optional[str] = NameOpt,
               metadata: Optional[list[str]] = MetadataOpt, remove: Optional[list[str]] = RemoveOpt) -> None:
        ctx.emit(getattr(ctx.client(), attribute).update(resource_id, metadata_patch(name, metadata, remove)))


for _app, _attribute, _noun, _columns in ((network_app, "networks", "network", NETWORK_COLUMNS),
                                          (subnet_app, "subnets", "subnet", SUBNET_COLUMNS),
                                          (port_app, "ports", "port", PORT_COLUMNS)):
    crud(_app, _attribute, _noun, _columns)
    register_update(_app, _attribute, _noun)


@command(network_app, "create")
def network_create(ctx: Ctx, name: Optional[str] = NameOpt,
                   type_: Optional[str] = typer.Option(None, "--type", help="vlan, vxlan or flat."),
                   segment: Optional[int] = typer.Option(None, "--segment", help="segmentationId."),
                   provider: Optional[str] = typer.Option(None, "--provider", help="Provider network."),
                   shared: bool = typer.Option(False, "--shared", help="isShared (admin)."),
                   metadata: Optional[list[str]] = MetadataOpt, file: Optional[Path] = FileOpt) -> None:
    """Allocate a virtual network."""
    body = with_metadata(load_body(file, None), metadata, name)
    for key, value in (("networkType", type_), ("segmentationId", segment), ("providerNetwork", provider)):
        if value is not None:
            body[key] = value
    if shared:
        body["isShared"] = True
    ctx.emit(ctx.client().networks.allocate(body))


@command(subnet_app, "create")
def subnet_create(ctx: Ctx, network: str = typer.Option(..., "--network", help="networkId."),
                  cidr: str = typer.Option(..., "--cidr"),
                  ip_version: Optional[str] = typer.Option(None, "--ip-version", help="IPv4 or IPv6 (from the CIDR)."),
                  gateway: Optional[str] = typer.Option(None, "--gateway"), name: Optional[str] = NameOpt,
                  no_dhcp: bool = typer.Option(False, "--no-dhcp"),
                  metadata: Optional[list[str]] = MetadataOpt, file: Optional[Path] = FileOpt) -> None:
    """Allocate a subnet."""
    body = with_metadata(load_body(file, None), metadata, name)
    body.update({"networkId": network, "cidr": cidr, "ipVersion": ip_version or ("IPv6" if ":" in cidr else "IPv4")})
    if gateway:
        body["gatewayIp"] = gateway
    if no_dhcp:
        body["isDhcpEnabled"] = False
    ctx.emit(ctx.client().subnets.allocate(body))


@command(port_app, "create")
def port_create(ctx: Ctx, network: str = typer.Option(..., "--network", help="networkId."), name: Optional[str] = NameOpt,
                mac: Optional[str] = typer.Option(None, "--mac"),
                ip: Optional[list[str]] = typer.Option(None, "--ip", help="Wanted address; repeatable."),
                metadata: Optional[list[str]] = MetadataOpt, file: Optional[Path] = FileOpt) -> None:
    """Allocate a port."""
    body = with_metadata(load_body(file, None), metadata, name)
    body["networkId"] = network
    if mac:
        body["macAddress"] = mac
    if ip:
        body["fixedIps"] = [{"ipAddress": address} for address in ip]
    ctx.emit(ctx.client().ports.allocate(body))


# --------------------------------------------------------------------------- alarms

crud(alarm_app, "alarms", "alarm", ALARM_COLUMNS, delete_verb="")


@command(alarm_app, "active")
def alarm_active(ctx: Ctx) -> None:
    """List the alarms not cleared."""
    ctx.emit(list(ctx.client().alarms.list("(neq,perceivedSeverity,CLEARED)")), ALARM_COLUMNS)


@command(alarm_app, "ack")
def alarm_ack(ctx: Ctx, alarm_id: str = typer.Argument(..., metavar="ID"),
              undo: bool = typer.Option(False, "--undo", help="Set UNACKNOWLEDGED again.")) -> None:
    """Acknowledge an alarm."""
    ctx.emit(ctx.client().alarms.acknowledge(alarm_id, not undo))


# --------------------------------------------------------------------------- performance

crud(pm_job_app, "pm_jobs", "PM job", PM_JOB_COLUMNS)


@command(pm_job_app, "create")
def pm_job_create(ctx: Ctx, object_type: str = typer.Option("VirtualCompute", "--object-type"),
                  objects: Optional[list[str]] = typer.Option(None, "--object", help="objectInstanceId; repeatable."),
                  object_filter: Optional[str] = typer.Option(None, "--object-filter",
                                                              help="e.g. '(eq,metadata/vimkit.cluster,c1)'."),
                  metric: Optional[list[str]] = typer.Option(None, "--metric", help="performanceMetric; repeatable."),
                  group: Optional[list[str]] = typer.Option(None, "--group", help="performanceMetricGroup; repeatable."),
                  collection: int = typer.Option(60, "--collection-period", help="Seconds."),
                  reporting: int = typer.Option(300, "--reporting-period", help="Seconds."),
                  file: Optional[Path] = FileOpt) -> None:
    """Create a PM job."""
    body = load_body(file, None)
    body.setdefault("objectType", object_type)
    body.setdefault("collectionPeriod", collection)
    body.setdefault("reportingPeriod", reporting)
    for key, value in (("objectInstanceIds", objects), ("performanceMetric", metric),
                       ("performanceMetricGroup", group)):
        if value:
            body[key] = list(value)
    if object_filter:
        body["objectFilter"] = object_filter
    ctx.emit(ctx.client().pm_jobs.create(body))


@command(pm_job_app, "reports")
def pm_job_reports(ctx: Ctx, pm_job_id: str = typer.Argument(..., metavar="JOB")) -> None:
    """List a PM job's reports."""
    ctx.emit(list(ctx.client().pm_jobs.reports(pm_job_id)), REPORT_COLUMNS)


@command(pm_job_app, "report")
def pm_job_report(ctx: Ctx, pm_job_id: str = typer.Argument(..., metavar="JOB"),
                  report_id: str = typer.Argument(..., metavar="REPORT")) -> None:
    """Show one performance report (its entries)."""
    report = ctx.client().pm_jobs.report(pm_job_id, report_id)
    if ctx.output.value != "table":
        ctx.emit(report)
        return
    rows = [{"object": entry.objectInstanceId, "sub": entry.subObjectInstanceId, "metric": entry.performanceMetric,
             "value": entry.performanceValues[-1].value if entry.performanceValues else None,
             "at": entry.performanceValues[-1].timeStamp.isoformat() if entry.performanceValues else None}
            for entry in report.entries]
    ctx.emit(rows, [("OBJECT", "object"), ("SUB-OBJECT", "sub"), ("METRIC", "metric"), ("LAST VALUE", "value"),
                    ("AT", "at")], title=f"report {report.reportId}")


crud(threshold_app, "thresholds", "threshold", THRESHOLD_COLUMNS)


@command(threshold_app, "create")
def threshold_create(ctx: Ctx, objects: list[str] = typer.Option(..., "--object", help="objectInstanceId; repeatable."),
                     metric: str = typer.Option(..., "--metric", help="e.g. VCpuUsageMean."),
                     value: float = typer.Option(..., "--value", help="thresholdValue."),
                     hysteresis: float = typer.Option(0.0, "--hysteresis"),
                     object_type: str = typer.Option("VirtualCompute", "--object-type")) -> None:
    """Create a threshold (crossings are ThresholdCrossedNotifications)."""
    body = {"objectType": object_type, "objectInstanceIds": list(objects), "performanceMetric": metric,
            "thresholdType": "SINGLE_VALUE", "thresholdDetails": {"thresholdValue": value, "hysteresis": hysteresis}}
    ctx.emit(ctx.client().thresholds.create(body))


# --------------------------------------------------------------------------- subscriptions


@command(subscription_app, "list")
def subscription_list(ctx: Ctx, api: str = ApiOpt, filter: Optional[str] = FilterOpt) -> None:
    """List the subscriptions of one API."""
    ctx.emit(list(ctx.client().subscriptions(api).list(filter)), SUBSCRIPTION_COLUMNS)


@command(subscription_app, "show")
def subscription_show(ctx: Ctx, subscription_id: str = typer.Argument(..., metavar="ID"), api: str = ApiOpt) -> None:
    """Show one subscription with its delivery status."""
    ctx.emit(ctx.client().subscriptions(api).get(subscription_id))


@command(subscription_app, "create")
def subscription_create(ctx: Ctx, callback: str = typer.Option(..., "--callback", help="callbackUri (must answer "
                                                                 "GET with 204)."),
                        api: str = ApiOpt,
                        change_type: Optional[list[str]] = typer.Option(None, "--change-type", help="Repeatable."),
                        resource: Optional[list[str]] = typer.Option(None, "--resource", help="resourceIds; repeatable."),
                        metadata: Optional[list[str]] = MetadataOpt,
                        basic: Optional[str] = typer.Option(None, "--basic", help="USER:PASSWORD the VIM sends."),
                        filter_file: Optional[Path] = typer.Option(None, "--filter-file", help="filter as JSON/YAML.")
                        ) -> None:
    """Subscribe a callback to an API's notifications."""
    flt = load_body(filter_file, None)
    for key, value in (("changeTypes", change_type), ("resourceIds", resource)):
        if value:
            flt[key] = list(value)
    if metadata:
        flt["metadata"] = parse_pairs(metadata)
    body: dict[str, Any] = {"callbackUri": callback}
    if flt:
        body["filter"] = flt
    if basic:
        user, sep, password = basic.partition(":")
        if not sep:
            raise CliError("--basic: expected USER:PASSWORD")
        body["authentication"] = {"authType": ["BASIC"], "paramsBasic": {"userName": user, "password": password}}
    ctx.emit(ctx.client().subscriptions(api).create(body))


@command(subscription_app, "delete")
def subscription_delete(ctx: Ctx, subscription_ids: list[str] = typer.Argument(..., metavar="ID..."),
                        api: str = ApiOpt) -> None:
    """Terminate subscriptions."""
    subscriptions = ctx.client().subscriptions(api)
    for subscription_id in subscription_ids:
        subscriptions.delete(subscription_id)
        ctx.done(f"subscription {subscription_id} deleted")

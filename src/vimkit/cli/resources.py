"""``vimkit compute|flavour|storage …``: the compute and storage resources from the command line,
through :mod:`vimkit.client` (docs/cli.md). Networks, faults, performance and subscriptions are
in :mod:`vimkit.cli.resources_more`."""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from vimkit.cli.context import CliError, Ctx, command, err, load_body, parse_pairs

# Capped by the server (VIMKIT_MAX_PREFER_WAIT, 60 s by default); what is left is polled.
PREFER_WAIT_CAP = 60

FilterOpt = typer.Option(None, "--filter", "-f", help="SOL 013 filter, e.g. '(eq,metadata/cluster,c1)'.")
MetadataOpt = typer.Option(None, "--metadata", "-m", help="KEY=VALUE, repeatable.")
FileOpt = typer.Option(None, "--file", help="Request body as JSON or YAML ('-' for stdin); options override it.")
WaitOpt = typer.Option(False, "--wait", "-w", help="Wait until the operation has finished, showing progress.")
TimeoutOpt = typer.Option(300.0, "--timeout", help="Seconds to wait with --wait.")

COMPUTE_COLUMNS = [("ID", "computeId"), ("NAME", "computeName"), ("FLAVOUR", "flavourId"),
                   ("STATE", "provisioningState"), ("RUNNING", "runningState"), ("ZONE", "zoneId"),
                   ("HOST", "hostId"), ("ADDRESSES", "virtualNetworkInterface/ipAddress")]
FLAVOUR_COLUMNS = [("ID", "flavourId"), ("VCPUS", "virtualCpu/numVirtualCpu"), ("MEMORY MB", "virtualMemory/virtualMemSize"),
                   ("DISK GB", "storageAttributes/sizeOfStorage"), ("PUBLIC", "isPublic")]
STORAGE_COLUMNS = [("ID", "storageId"), ("NAME", "storageName"), ("TYPE", "typeOfStorage"), ("GB", "sizeOfStorage"),
                   ("ZONE", "zoneId"), ("POOL", "poolId"), ("ATTACHED TO", "attachments/computeId"),
                   ("STATE", "provisioningState"), ("OPER", "operationalState")]

compute_app = typer.Typer(help="Virtualised compute resources (VMs).", no_args_is_help=True)
flavour_app = typer.Typer(help="Compute flavours.", no_args_is_help=True)
storage_app = typer.Typer(help="Virtualised storage resources (volumes).", no_args_is_help=True)


def state_of(resource: Any) -> str | None:
    state = getattr(resource, "provisioningState", None)
    return getattr(state, "value", state)


def waited(label: str, start: Callable[[Optional[float]], Any], settle: Callable[[Any, float], Any],
           wait: bool, timeout: float) -> Any:
    """Run ``start`` (with ``Prefer: wait`` when ``--wait``) and, when the server's cap ended the
    wait early, poll with ``settle`` for the rest of ``timeout``; a spinner shows meanwhile."""
    if not wait:
        return start(None)
    began = time.monotonic()
    with err.status(f"{label} …"):
        result = start(min(timeout, PREFER_WAIT_CAP))
        if result is not None and state_of(result) in ("ALLOCATING", "UPDATING", "TERMINATING"):
            result = settle(result, max(1.0, timeout - (time.monotonic() - began)))
    err.print(f"{label}: done in {time.monotonic() - began:.1f} s", highlight=False)
    return result


def crud(app: typer.Typer, attribute: str, noun: str, columns: Sequence[tuple[str, str]],
         delete_verb: str = "delete") -> None:
    """``list``, ``show`` and ``delete`` of a collection, the same for every resource."""

    @command(app, "list", help=f"List {noun}s, all pages.")
    def list_(ctx: Ctx, filter: Optional[str] = FilterOpt) -> None:
        ctx.emit(list(getattr(ctx.client(), attribute).list(filter)), columns)

    @command(app, "show", help=f"Show one {noun}.")
    def show(ctx: Ctx, resource_id: str = typer.Argument(..., metavar="ID")) -> None:
        ctx.emit(getattr(ctx.client(), attribute).get(resource_id))

    if delete_verb:
        @command(app, delete_verb, help=f"Delete {noun}s.")
        def delete(ctx: Ctx, resource_ids: list[str] = typer.Argument(..., metavar="ID...")) -> None:
            collection = getattr(ctx.client(), attribute)
            for resource_id in resource_ids:
                collection.delete(resource_id)
                ctx.done(f"{noun} {resource_id} deleted")


# --------------------------------------------------------------------------- compute

crud(compute_app, "computes", "compute", COMPUTE_COLUMNS, delete_verb="")


@command(compute_app, "allocate")
def compute_allocate(
    ctx: Ctx,
    flavour: Optional[str] = typer.Option(None, "--flavour", help="computeFlavourId (required unless in --file)."),
    name: Optional[str] = typer.Option(None, "--name"),
    image: Optional[str] = typer.Option(None, "--image", help="vcImageId."),
    network: Optional[list[str]] = typer.Option(None, "--network", help="A NIC on this network; repeatable."),
    port: Optional[list[str]] = typer.Option(None, "--port", help="A NIC on this existing port; repeatable."),
    volume: Optional[list[str]] = typer.Option(None, "--volume", help="Volume attached at boot; repeatable."),
    zone: Optional[str] = typer.Option(None, "--zone"),
    host: Optional[str] = typer.Option(None, "--host"),
    anti_affinity_group: Optional[str] = typer.Option(None, "--anti-affinity-group", help="Group id (ANTI_AFFINITY)."),
    affinity_group: Optional[str] = typer.Option(None, "--affinity-group", help="Group id (AFFINITY)."),
    user_data: Optional[Path] = typer.Option(None, "--user-data", help="File with the user data."),
    metadata: Optional[list[str]] = MetadataOpt,
    file: Optional[Path] = FileOpt,
    wait: bool = WaitOpt,
    timeout: float = TimeoutOpt,
) -> None:
    """Allocate a compute (Allocate Virtualised Compute Resource)."""
    body = load_body(file, None)
    for key, value in (("computeFlavourId", flavour), ("computeName", name), ("vcImageId", image)):
        if value is not None:
            body[key] = value
    if "computeFlavourId" not in body:
        raise CliError("--flavour is required")
    nics = [{"networkId": item} for item in network or []] + [{"networkPortId": item} for item in port or []]
    if nics:
        body["interfaceData"] = body.get("interfaceData", []) + nics
    if volume:
        body["storageIds"] = body.get("storageIds", []) + list(volume)
    if zone or host:
        body["locationConstraints"] = {key: value for key, value in (("zoneId", zone), ("hostId", host)) if value}
    rules = [("ANTI_AFFINITY", anti_affinity_group), ("AFFINITY", affinity_group)]
    constraints = [{"type": kind, "affinityOrAntiAffinityResourceGroupId": group} for kind, group in rules if group]
    if constraints:
        body["affinityOrAntiAffinityConstraints"] = body.get("affinityOrAntiAffinityConstraints", []) + constraints
    if user_data is not None:
        body["userData"] = {"content": user_data.read_text()}
    if metadata:
        body["metadata"] = {**body.get("metadata", {}), **parse_pairs(metadata)}
    computes = ctx.client().computes
    result = waited("allocating", lambda w: computes.allocate(body, wait=w),
                    lambda c, left: computes.wait_ready(c.computeId, timeout=left), wait, timeout)
    ctx.emit(result)


@command(compute_app, "operate")
def compute_operate(
    ctx: Ctx,
    compute_id: str = typer.Argument(..., metavar="ID"),
    operation: str = typer.Argument(..., help="START, STOP, PAUSE, UNPAUSE, SUSPEND, RESUME, REBOOT, "
                                    "CREATE_SNAPSHOT or DELETE_SNAPSHOT."),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="computeOperationInputData KEY=VALUE, "
                                              "e.g. type=HARD, snapshotName=nightly."),
    wait: bool = WaitOpt,
    timeout: float = TimeoutOpt,
) -> None:
    """Operate a compute (start, stop, reboot, snapshots …)."""
    computes = ctx.client().computes
    result = waited(operation.lower(), lambda w: computes.operate(compute_id, operation.upper(),
                                                                  parse_pairs(input, "--input"), wait=w),
                    lambda c, left: computes.wait_task(compute_id, timeout=left), wait, timeout)
    ctx.emit(result)


@command(compute_app, "scale")
def compute_scale(ctx: Ctx, compute_id: str = typer.Argument(..., metavar="ID"),
                  flavour: str = typer.Option(..., "--flavour", help="The new computeFlavourId."),
                  wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Scale a compute to another flavour."""
    computes = ctx.client().computes
    ctx.emit(waited("scaling", lambda w: computes.scale(compute_id, flavour, wait=w),
                    lambda c, left: computes.wait_task(compute_id, timeout=left), wait, timeout))


@command(compute_app, "migrate")
def compute_migrate(ctx: Ctx, compute_id: str = typer.Argument(..., metavar="ID"),
                    offline: bool = typer.Option(False, "--offline", help="OFFLINE_MIGRATION (default LIVE)."),
                    zone: Optional[str] = typer.Option(None, "--zone"), host: Optional[str] = typer.Option(None, "--host"),
                    wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Migrate a compute to another host."""
    body: dict[str, Any] = {"migrationType": "OFFLINE_MIGRATION" if offline else "LIVE_MIGRATION"}
    if zone or host:
        body["migrationConstraint"] = {key: value for key, value in (("zoneId", zone), ("hostId", host)) if value}
    computes = ctx.client().computes
    ctx.emit(waited("migrating", lambda w: computes.migrate(compute_id, body, wait=w),
                    lambda c, left: computes.wait_task(compute_id, timeout=left), wait, timeout))


@command(compute_app, "update")
def compute_update(ctx: Ctx, compute_id: str = typer.Argument(..., metavar="ID"),
                   metadata: Optional[list[str]] = MetadataOpt,
                   remove: Optional[list[str]] = typer.Option(None, "--remove-metadata", help="Key to remove."),
                   attach: Optional[list[str]] = typer.Option(None, "--attach", help="Volume to attach."),
                   detach: Optional[list[str]] = typer.Option(None, "--detach", help="Volume to detach."),
                   network: Optional[list[str]] = typer.Option(None, "--add-nic", help="New NIC on this network."),
                   ) -> None:
    """Update a compute: metadata, NICs, volumes (all or nothing)."""
    patch: dict[str, Any] = {}
    changes: dict[str, Any] = {**parse_pairs(metadata), **{key: None for key in remove or []}}
    if changes:
        patch["metadata"] = changes
    if attach:
        patch["virtualDiskAttach"] = list(attach)
    if detach:
        patch["virtualDiskDetach"] = list(detach)
    if network:
        patch["networkInterfaceNew"] = [{"networkId": item} for item in network]
    if not patch:
        raise CliError("nothing to change: give --metadata, --remove-metadata, --attach, --detach or --add-nic")
    ctx.emit(ctx.client().computes.update(compute_id, patch))


@command(compute_app, "terminate")
def compute_terminate(ctx: Ctx, compute_ids: list[str] = typer.Argument(..., metavar="ID..."),
                      wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Terminate computes."""
    computes = ctx.client().computes
    for compute_id in compute_ids:
        waited(f"terminating {compute_id}", lambda w: computes.terminate(compute_id, wait=w),
               lambda c, left: computes.wait_gone(compute_id, timeout=left), wait, timeout)
        ctx.done(f"compute {compute_id} {'terminated' if wait else 'terminating'}")


@command(compute_app, "capacity")
def compute_capacity(ctx: Ctx, flavour: Optional[str] = typer.Option(None, "--flavour", help="How many of it fit."),
                     zone: Optional[str] = typer.Option(None, "--zone")) -> None:
    """Compute capacity (and availableInstances of a flavour)."""
    ctx.emit(ctx.client().compute_info.capacity(zone, flavour))


# --------------------------------------------------------------------------- flavours

crud(flavour_app, "flavours", "flavour", FLAVOUR_COLUMNS)


@command(flavour_app, "create")
def flavour_create(ctx: Ctx, flavour_id: Optional[str] = typer.Option(None, "--id"),
                   vcpus: Optional[int] = typer.Option(None, "--vcpus"),
                   memory: Optional[int] = typer.Option(None, "--memory", help="MB."),
                   disk: Optional[int] = typer.Option(None, "--disk", help="Root disk GB."),
                   private: bool = typer.Option(False, "--private", help="isPublic: false."),
                   metadata: Optional[list[str]] = MetadataOpt, file: Optional[Path] = FileOpt) -> None:
    """Create a compute flavour."""
    body = load_body(file, None)
    if flavour_id:
        body["flavourId"] = flavour_id
    if vcpus is not None:
        body["virtualCpu"] = {**body.get("virtualCpu", {}), "numVirtualCpu": vcpus}
    if memory is not None:
        body["virtualMemory"] = {**body.get("virtualMemory", {}), "virtualMemSize": memory}
    if disk is not None:
        body["storageAttributes"] = [{"typeOfStorage": "root", "sizeOfStorage": disk}]
    if private:
        body["isPublic"] = False
    if metadata:
        body["metadata"] = {**body.get("metadata", {}), **parse_pairs(metadata)}
    if "virtualCpu" not in body or "virtualMemory" not in body:
        raise CliError("--vcpus and --memory are required (or a --file with the flavour)")
    ctx.emit(ctx.client().flavours.create(body))


# --------------------------------------------------------------------------- storage

crud(storage_app, "storages", "volume", STORAGE_COLUMNS)


@command(storage_app, "allocate")
def storage_allocate(ctx: Ctx, size: Optional[int] = typer.Option(None, "--size", help="GB."),
                     type_: str = typer.Option("volume", "--type", help="typeOfStorage."),
                     name: Optional[str] = typer.Option(None, "--name"),
                     zone: Optional[str] = typer.Option(None, "--zone"), pool: Optional[str] = typer.Option(None, "--pool"),
                     multi_attach: bool = typer.Option(False, "--multi-attach"),
                     metadata: Optional[list[str]] = MetadataOpt, file: Optional[Path] = FileOpt,
                     wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Allocate a volume."""
    body = load_body(file, None)
    data = body.setdefault("storageData", {})
    data.setdefault("typeOfStorage", type_)
    if size is not None:
        data["sizeOfStorage"] = size
    if "sizeOfStorage" not in data:
        raise CliError("--size is required")
    if multi_attach:
        data["multiAttach"] = True
    if name:
        body["storageName"] = name
    if zone or pool:
        body["locationConstraints"] = {key: value for key, value in (("zoneId", zone), ("poolId", pool)) if value}
    if metadata:
        body["metadata"] = {**body.get("metadata", {}), **parse_pairs(metadata)}
    storages = ctx.client().storages
    ctx.emit(waited("allocating", lambda w: storages.allocate(body, wait=w),
                    lambda s, left: storages.wait_ready(s.storageId, timeout=left), wait, timeout))


@command(storage_app, "update")
def storage_update(ctx: Ctx, storage_id: str = typer.Argument(..., metavar="ID"),
                   name: Optional[str] = typer.Option(None, "--name"), metadata: Optional[list[str]] = MetadataOpt,
                   remove: Optional[list[str]] = typer.Option(None, "--remove-metadata")) -> None:
    """Update a volume's name or metadata."""
    patch: dict[str, Any] = {}
    if name:
        patch["storageName"] = name
    changes: dict[str, Any] = {**parse_pairs(metadata), **{key: None for key in remove or []}}
    if changes:
        patch["metadata"] = changes
    if not patch:
        raise CliError("nothing to change: give --name, --metadata or --remove-metadata")
    ctx.emit(ctx.client().storages.update(storage_id, patch))


@command(storage_app, "scale")
def storage_scale(ctx: Ctx, storage_id: str = typer.Argument(..., metavar="ID"),
                  size: int = typer.Option(..., "--size", help="New size in GB (grow only)."),
                  wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Grow a volume."""
    storages = ctx.client().storages
    ctx.emit(waited("scaling", lambda w: storages.scale(storage_id, size, wait=w),
                    lambda s, left: storages.wait_ready(storage_id, timeout=left), wait, timeout))


@command(storage_app, "migrate")
def storage_migrate(ctx: Ctx, storage_id: str = typer.Argument(..., metavar="ID"),
                    zone: Optional[str] = typer.Option(None, "--zone"), pool: Optional[str] = typer.Option(None, "--pool"),
                    wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Move a volume to another pool."""
    body: dict[str, Any] = {}
    if zone or pool:
        body["migrationConstraint"] = {key: value for key, value in (("zoneId", zone), ("poolId", pool)) if value}
    storages = ctx.client().storages
    ctx.emit(waited("migrating", lambda w: storages.migrate(storage_id, body, wait=w),
                    lambda s, left: storages.wait_ready(storage_id, timeout=left), wait, timeout))


@command(storage_app, "operate")
def storage_operate(ctx: Ctx, storage_id: str = typer.Argument(..., metavar="ID"),
                    operation: str = typer.Argument(..., help="CREATE_SNAPSHOT or DELETE_SNAPSHOT."),
                    input: Optional[list[str]] = typer.Option(None, "--input", "-i",
                                                              help="snapshotName=… or snapshotId=…"),
                    wait: bool = WaitOpt, timeout: float = TimeoutOpt) -> None:
    """Operate a volume (snapshots)."""
    storages = ctx.client().storages
    ctx.emit(waited(operation.lower(), lambda w: storages.operate(storage_id, operation.upper(),
                                                                  parse_pairs(input, "--input"), wait=w),
                    lambda s, left: storages.wait_ready(storage_id, timeout=left), wait, timeout))

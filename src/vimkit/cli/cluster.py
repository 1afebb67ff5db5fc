"""``vimkit cluster create|show|update|scale|delete``: Annex A from a YAML description
(docs/cli.md, "Clusters"); the work is in :mod:`vimkit.cli.cluster_ops`."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vimkit.cli.context import EXIT_API, CliError, Ctx, Output, command, err

cluster_app = typer.Typer(help="CIS cluster infrastructure from a YAML description (Annex A).", no_args_is_help=True)

SpecOpt = typer.Option(..., "--file", "-f", help="Cluster description (YAML).")
ConcurrencyOpt = typer.Option(32, "--concurrency", help="Requests in flight at once.")


def _spec(path: Path) -> Any:
    from vimkit.cli.cluster_spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        raise CliError(str(exc)) from exc


def _run(ctx: Ctx, work: Callable[[Any], Awaitable[Any]], concurrency: int = 32) -> Any:
    """Run ``work(client)`` on an event loop with an async client sized for ``concurrency``."""
    from vimkit.cli.cluster_ops import ClusterRefused

    async def main() -> Any:
        async with ctx.async_client(max_connections=max(concurrency, 8), timeout=120.0) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except ClusterRefused as exc:
        raise CliError(str(exc), EXIT_API) from exc


def _apply(ctx: Ctx, spec: Any, remove: bool, concurrency: int, verb: str) -> None:
    from vimkit.cli import cluster_ops

    began = time.monotonic()

    async def work(client: Any) -> Any:
        before = await cluster_ops.gather_state(client, spec.name)
        total = cluster_ops.plan_size(spec, before)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=False, disable=total == 0) as bar:
            task = bar.add_task(f"{verb} {spec.name}", total=total)
            return await cluster_ops.apply(client, spec, remove=remove, concurrency=concurrency, before=before,
                                           progress=lambda kind: bar.advance(task))

    outcome = _run(ctx, work, concurrency)
    elapsed = time.monotonic() - began
    err.print(f"cluster {spec.name}: {outcome.created} created, {outcome.updated} updated, {outcome.removed} removed "
              f"in {elapsed:.2f} s", highlight=False)
    _show(ctx, outcome.state, alarms=[])


@command(cluster_app, "create")
def cluster_create(ctx: Ctx, file: Path = SpecOpt, concurrency: int = ConcurrencyOpt) -> None:
    """Create the cluster's networks, volumes and nodes (or complete an interrupted create)."""
    _apply(ctx, _spec(file), remove=False, concurrency=concurrency, verb="creating")


@command(cluster_app, "update")
def cluster_update(ctx: Ctx, file: Path = SpecOpt, concurrency: int = ConcurrencyOpt) -> None:
    """Make the cluster match its description: labels, flavours, volume sizes, node counts."""
    _apply(ctx, _spec(file), remove=True, concurrency=concurrency, verb="updating")


@command(cluster_app, "scale")
def cluster_scale(ctx: Ctx, file: Path = SpecOpt,
                  pool: str = typer.Option(..., "--pool", help="The node pool to scale."),
                  count: Optional[int] = typer.Option(None, "--count", help="New number of nodes."),
                  flavour: Optional[str] = typer.Option(None, "--flavour", help="New flavour of every node."),
                  concurrency: int = ConcurrencyOpt) -> None:
    """Scale a node pool out/in (--count) or up/down (--flavour); the file is not changed."""
    spec = _spec(file)
    try:
        target = spec.pool(pool)
    except KeyError:
        raise CliError(f"no node pool '{pool}' in {file}") from None
    if count is None and flavour is None:
        raise CliError("give --count and/or --flavour")
    if count is not None:
        if count < 0:
            raise CliError("--count must be at least 0")
        target.count = count
    if flavour is not None:
        target.flavour = flavour
    _apply(ctx, spec, remove=True, concurrency=concurrency, verb="scaling")


@command(cluster_app, "show")
def cluster_show(ctx: Ctx, name: str = typer.Argument(..., help="Cluster name.")) -> None:
    """The cluster's resources, their states and active alarms (A.2.5, A.5.2)."""
    from vimkit.cli import cluster_ops

    async def work(client: Any) -> Any:
        state = await cluster_ops.gather_state(client, name)
        ids = state.managed_ids()
        alarms: list[Any] = []
        for start in range(0, len(ids), 100):  # a filter takes at most 100 values
            chunk = ",".join(ids[start:start + 100])
            alarms += [a async for a in client.alarms.list(f"(in,managedObjectId,{chunk});(neq,perceivedSeverity,CLEARED)")]
        return state, alarms

    state, alarms = _run(ctx, work)
    if state.empty():
        raise CliError(f"no cluster '{name}': no resource carries vimkit.cluster={name}", EXIT_API)
    _show(ctx, state, alarms)


@command(cluster_app, "delete")
def cluster_delete(ctx: Ctx, name: str = typer.Argument(..., help="Cluster name."),
                   yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete every resource of the cluster (A.2.3), its PM job and subscriptions."""
    from vimkit.cli import cluster_ops

    if not yes and not typer.confirm(f"delete cluster '{name}' and all its resources?", err=True):
        raise CliError("not confirmed")
    began = time.monotonic()
    with err.status(f"deleting {name} …"):
        removed = _run(ctx, lambda client: cluster_ops.delete_cluster(client, name))
    if removed == 0:
        raise CliError(f"no cluster '{name}'", EXIT_API)
    ctx.done(f"cluster {name}: {removed} resources deleted in {time.monotonic() - began:.2f} s")


# --------------------------------------------------------------------------- presentation


def summary(state: Any, alarms: list[Any]) -> dict[str, Any]:
    from vimkit.cli.cluster_spec import POOL
    from vimkit.cli.context import plain

    volumes_of: dict[str, list[str]] = {}
    for (node, _), volume in sorted(state.volumes.items()):
        volumes_of.setdefault(node, []).append(volume.storageId)
    nodes = []
    for key, compute in sorted(state.computes.items(), key=lambda item: (item[1].metadata.get(POOL, ""), _index(item[0]))):
        nodes.append({"node": key, "pool": compute.metadata.get(POOL), "computeId": compute.computeId,
                      "flavour": compute.flavourId, "state": plain(compute.provisioningState),
                      "running": plain(compute.runningState), "host": compute.hostId,
                      "addresses": [a for nic in compute.virtualNetworkInterface for a in nic.ipAddress],
                      "volumes": volumes_of.get(key, []), "volumeCount": len(volumes_of.get(key, []))})
    return {
        "name": state.name,
        "nodes": nodes,
        "networks": [{"network": key, "networkId": n.networkResourceId, "segment": n.segmentationId,
                      "subnets": [s.cidr for k, s in state.subnets.items() if k.startswith(key + "/")]}
                     for key, n in sorted(state.networks.items())],
        "antiAffinityGroups": {pool: g.groupId for pool, g in state.groups.items()},
        "pmJobs": [j.pmJobId for j in state.pm_jobs],
        "subscriptions": [{"api": api, "id": s.id} for api, s in state.subscriptions],
        "activeAlarms": [{"alarmId": a.alarmId, "object": a.managedObjectId, "cause": a.probableCause,
                          "severity": plain(a.perceivedSeverity)} for a in alarms],
    }


def _index(key: str) -> int:
    tail = key.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _show(ctx: Ctx, state: Any, alarms: list[Any]) -> None:
    document = summary(state, alarms)
    if ctx.output is not Output.table:
        ctx.emit(document)
        return
    ctx.emit(document["nodes"], [("NODE", "node"), ("COMPUTE", "computeId"), ("FLAVOUR", "flavour"),
                                 ("STATE", "state"), ("RUNNING", "running"), ("HOST", "host"),
                                 ("ADDRESSES", "addresses"), ("VOLS", "volumeCount")],
             title=f"cluster {state.name}: {len(document['nodes'])} nodes")
    ctx.emit(document["networks"], [("NETWORK", "network"), ("ID", "networkId"), ("SEGMENT", "segment"),
                                    ("SUBNETS", "subnets")])
    err.print(f"PM jobs: {', '.join(document['pmJobs']) or 'none'}; subscriptions: "
              f"{', '.join(s['api'] for s in document['subscriptions']) or 'none'}; "
              f"active alarms: {len(document['activeAlarms'])}", highlight=False)
    if document["activeAlarms"]:
        ctx.emit(document["activeAlarms"], [("ALARM", "alarmId"), ("OBJECT", "object"), ("CAUSE", "cause"),
                                            ("SEVERITY", "severity")])

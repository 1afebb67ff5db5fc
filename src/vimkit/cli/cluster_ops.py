"""Annex A as code: create, update, scale, query and delete a cluster's virtualised resources
with the asynchronous SDK.

- :func:`gather_state` (A.2.5) finds everything of a cluster by its metadata, in parallel.
- :func:`preflight` (A.3.2) checks flavours and capacity for what is still missing and refuses
  a cluster that cannot fit before anything is allocated.
- :func:`apply` (A.2.1, A.2.2, A.2.4, A.2.6, A.4.1, A.5.1) allocates networks, subnets, volumes
  and anti-affinity groups in parallel, then the computes in parallel, updates what differs from
  the description, removes nodes beyond the counts (update/scale), and makes sure the PM job and
  the subscriptions exist. What exists already is kept, so running it again completes a run that
  was interrupted. If a step fails, every resource this run created (FAILED ones included) is
  terminated again before the error is raised.
- :func:`delete_cluster` (A.2.3, A.4.2) removes everything, computes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vimkit.cli.cluster_spec import (
    CLUSTER,
    NETWORK,
    NODE,
    POOL,
    SUBNET,
    VOLUME,
    ClusterSpec,
    compute_body,
    group_body,
    network_body,
    node_index,
    node_key,
    pm_filter,
    subnet_body,
    volume_body,
)
from vimkit.client import AsyncClient, NotFound
from vimkit.client.errors import ApiError, VimError
from vimkit.client.resources import settled

PREFER_WAIT = 60
RESOURCE_APIS = ("compute", "network", "storage")
Progress = Callable[[str], None]


class ClusterRefused(VimError):
    """The cluster cannot be created as described; nothing was allocated."""


@dataclass
class ClusterState:
    """The cluster's resources in the VIM, keyed by the part of the description they realise."""

    name: str
    networks: dict[str, Any] = field(default_factory=dict)
    subnets: dict[str, Any] = field(default_factory=dict)
    computes: dict[str, Any] = field(default_factory=dict)
    volumes: dict[tuple[str, int], Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    pm_jobs: list[Any] = field(default_factory=list)
    subscriptions: list[tuple[str, Any]] = field(default_factory=list)
    # Two resources for one key (a race between two runs): the second is surplus and goes.
    surplus: list[tuple[str, Any]] = field(default_factory=list)

    def ids(self) -> set[str]:
        found = {n.networkResourceId for n in self.networks.values()} | {s.resourceId for s in self.subnets.values()}
        found |= {c.computeId for c in self.computes.values()} | {v.storageId for v in self.volumes.values()}
        found |= {g.groupId for g in self.groups.values()} | {j.pmJobId for j in self.pm_jobs}
        found |= {s.id for _, s in self.subscriptions} | {resource_id(kind, r) for kind, r in self.surplus}
        return found

    def empty(self) -> bool:
        return not self.ids()

    def managed_ids(self) -> list[str]:
        return sorted({c.computeId for c in self.computes.values()} | {v.storageId for v in self.volumes.values()})


ID_FIELD = {"network": "networkResourceId", "subnet": "resourceId", "compute": "computeId", "volume": "storageId",
            "group": "groupId"}


def resource_id(kind: str, resource: Any) -> str:
    return str(getattr(resource, ID_FIELD[kind]))


def _keep(target: dict[Any, Any], key: Any, kind: str, resource: Any, state: ClusterState) -> None:
    state_value = getattr(getattr(resource, "provisioningState", None), "value", None)
    # A FAILED resource realises nothing: it is surplus, and its part of the description is missing.
    if key in target or state_value == "FAILED":
        state.surplus.append((kind, resource))
    else:
        target[key] = resource


async def _listed(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


async def gather_state(client: AsyncClient, name: str) -> ClusterState:
    """Query the cluster's resources (A.2.5): every collection filtered by ``vimkit.cluster``."""
    flt = f"(eq,metadata/{CLUSTER},{name})"
    networks, subnets, computes, volumes, groups, jobs, *subscriptions = await asyncio.gather(
        _listed(client.networks.list(flt)), _listed(client.subnets.list(flt)), _listed(client.computes.list(flt)),
        _listed(client.storages.list(flt)), _listed(client.compute_affinity_groups.list(flt)),
        _listed(client.pm_jobs.list(f"(eq,objectFilter,'{pm_filter(name)}')")),
        *(_listed(client.subscriptions(api).list()) for api in (*RESOURCE_APIS, "faults")))
    state = ClusterState(name)
    for network in networks:
        _keep(state.networks, network.metadata.get(NETWORK, network.networkResourceId), "network", network, state)
    for subnet in subnets:
        _keep(state.subnets, subnet.metadata.get(SUBNET, subnet.resourceId), "subnet", subnet, state)
    for compute in computes:
        _keep(state.computes, compute.metadata.get(NODE, compute.computeId), "compute", compute, state)
    for volume in volumes:
        key = (volume.metadata.get(NODE, volume.storageId), int(volume.metadata.get(VOLUME, "0")))
        _keep(state.volumes, key, "volume", volume, state)
    for group in groups:
        _keep(state.groups, group.metadata.get(POOL, group.groupId), "group", group, state)
    state.pm_jobs = list(jobs)
    ids = set(state.managed_ids())
    for api, found in zip((*RESOURCE_APIS, "faults"), subscriptions, strict=True):
        for subscription in found:
            flt_ = subscription.filter
            if api == "faults":
                mine = flt_ is not None and bool(set(flt_.managedObjectIds or ()) & ids)
            else:
                mine = flt_ is not None and (flt_.metadata or {}).get(CLUSTER) == name
            if mine:
                state.subscriptions.append((api, subscription))
    return state


# --------------------------------------------------------------------------- A.3: will it fit?


def missing_nodes(spec: ClusterSpec, state: ClusterState) -> list[tuple[Any, int]]:
    return [(pool, index) for pool in spec.nodePools for index in range(pool.count)
            if node_key(pool.name, index) not in state.computes]


async def preflight(client: AsyncClient, spec: ClusterSpec, state: ClusterState) -> list[str]:
    """What prevents the missing part of the cluster from fitting, as sentences (empty: it fits)."""
    problems: list[str] = []
    missing = missing_nodes(spec, state)
    flavour_ids = sorted({pool.flavour for pool in spec.nodePools})
    flavours = await asyncio.gather(*(client.flavours.get(f) for f in flavour_ids), return_exceptions=True)
    sizes: dict[str, tuple[int, float]] = {}
    for flavour_id, flavour in zip(flavour_ids, flavours, strict=True):
        if isinstance(flavour, NotFound):
            problems.append(f"flavour '{flavour_id}' does not exist")
        elif isinstance(flavour, BaseException):
            raise flavour
        else:
            sizes[flavour_id] = (flavour.virtualCpu.numVirtualCpu, flavour.virtualMemory.virtualMemSize)
    if problems:
        return problems
    zone_of = {pool.name: pool.zone or spec.zone for pool in spec.nodePools}
    wanted: dict[tuple[str | None, str], int] = {}
    for pool, _ in missing:
        key = (zone_of[pool.name], pool.flavour)
        wanted[key] = wanted.get(key, 0) + 1
    zones = sorted({zone for zone, _ in wanted} | {zone_of[p.name] for p in spec.nodePools if p.antiAffinity},
                   key=str)
    per_flavour, per_zone = await asyncio.gather(
        asyncio.gather(*(client.compute_info.capacity(zone, flavour) for zone, flavour in wanted)),
        asyncio.gather(*(client.compute_info.capacity(zone) for zone in zones)))
    for (zone, flavour), capacity in zip(wanted, per_flavour, strict=True):
        need = wanted[(zone, flavour)]
        if capacity.availableInstances is not None and capacity.availableInstances < need:
            problems.append(f"{need} more computes of flavour '{flavour}' needed{_in(zone)}, "
                            f"{capacity.availableInstances} fit")
    zone_capacity = dict(zip(zones, per_zone, strict=True))
    for zone in {zone for zone, _ in wanted}:
        vcpus = sum(sizes[f][0] * n for (z, f), n in wanted.items() if z == zone)
        memory = sum(sizes[f][1] * n for (z, f), n in wanted.items() if z == zone)
        capacity = zone_capacity[zone]
        if vcpus > capacity.vcpus.available:
            problems.append(f"{vcpus} vCPUs needed{_in(zone)}, {capacity.vcpus.available} available")
        if memory > capacity.memoryMb.available:
            problems.append(f"{memory:g} MB of memory needed{_in(zone)}, {capacity.memoryMb.available} available")
    for pool in spec.nodePools:
        hosts = zone_capacity[zone_of[pool.name]].schedulableHosts if pool.antiAffinity else None
        if hosts is not None and pool.count > hosts:
            problems.append(f"node pool '{pool.name}' wants {pool.count} nodes on distinct hosts, "
                            f"{hosts} hosts take new computes{_in(zone_of[pool.name])}")
    problems += await _storage_problems(client, spec, state)
    problems += await _network_problems(client, spec, state)
    return problems


def _in(zone: str | None) -> str:
    return f" in zone {zone}" if zone else ""


async def _storage_problems(client: AsyncClient, spec: ClusterSpec, state: ClusterState) -> list[str]:
    need: dict[tuple[str | None, str], list[int]] = {}
    for pool in spec.nodePools:
        for index in range(pool.count):
            for number, volume in enumerate(pool.volumes):
                if (node_key(pool.name, index), number) not in state.volumes:
                    need.setdefault((pool.zone or spec.zone, volume.type), []).append(volume.sizeGb)
    if not need:
        return []
    capacities = await asyncio.gather(*(client.storage_info.capacity(zone, kind) for zone, kind in need),
                                      return_exceptions=True)
    problems = []
    for (zone, kind), capacity in zip(need, capacities, strict=True):
        if isinstance(capacity, ApiError):
            problems.append(f"storage type '{kind}'{_in(zone)}: {capacity.detail}")
            continue
        if isinstance(capacity, BaseException):
            raise capacity
        total, largest = sum(need[(zone, kind)]), max(need[(zone, kind)])
        if total > capacity.availableGb:
            problems.append(f"{total} GB of '{kind}' storage needed{_in(zone)}, {capacity.availableGb} GB available")
        elif largest > capacity.largestAvailableGb:
            problems.append(f"a {largest} GB '{kind}' volume is needed{_in(zone)}, the largest possible is "
                            f"{capacity.largestAvailableGb} GB")
    return problems


async def _network_problems(client: AsyncClient, spec: ClusterSpec, state: ClusterState) -> list[str]:
    missing = [network for network in spec.networks if network.name not in state.networks]
    if not missing:
        return []
    capacity = await client.network_info.capacity()
    available = sum(segment.available for segment in capacity.segments)
    if len(missing) > available:
        return [f"{len(missing)} networks needed, {available} network segments available"]
    return []


# --------------------------------------------------------------------------- running many calls


class Batch:
    """Runs calls at most ``limit`` at a time; after the first failure no new call starts, the
    ones in flight finish (so what they created is known), then the failure is raised."""

    def __init__(self, limit: int, failures: list[BaseException] | None = None) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        # Shared between batches that make up one operation: a failure in one stops the others.
        self.failures: list[BaseException] = failures if failures is not None else []

    @property
    def failure(self) -> BaseException | None:
        return self.failures[0] if self.failures else None

    async def _one(self, make: Callable[[], Awaitable[Any]]) -> Any:
        async with self.semaphore:
            if self.failures:
                return None
            try:
                return await make()
            except BaseException as exc:
                self.failures.append(exc)
                raise

    async def run(self, makers: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        results = await asyncio.gather(*(self._one(make) for make in makers), return_exceptions=True)
        if self.failure is not None:
            raise self.failure
        return results


async def _finished(client: AsyncClient, collection: Any, resource: Any, resource_id: str) -> Any:
    """The resource once realised: the VIM's own wait first, polling for the rest."""
    if settled(resource):
        return resource
    return await collection.wait_ready(resource_id, timeout=600)


# --------------------------------------------------------------------------- apply


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    removed: int = 0
    state: ClusterState | None = None


def plan_size(spec: ClusterSpec, state: ClusterState) -> int:
    """How many resources :func:`apply` will allocate (for a progress bar)."""
    count = sum(1 for n in spec.networks if n.name not in state.networks)
    count += sum(1 for n in spec.networks for s in n.subnets if f"{n.name}/{s.name}" not in state.subnets)
    count += sum(1 for p in spec.nodePools for i in range(p.count) for v in range(len(p.volumes))
                 if (node_key(p.name, i), v) not in state.volumes)
    return count + len(missing_nodes(spec, state))


async def apply(client: AsyncClient, spec: ClusterSpec, *, remove: bool = False, concurrency: int = 32,
                progress: Progress = lambda kind: None, before: ClusterState | None = None) -> Outcome:
    before = before or await gather_state(client, spec.name)
    if before.surplus:
        await delete_resources(client, ClusterState(spec.name, surplus=before.surplus))
        before.surplus = []
    problems = await preflight(client, spec, before)
    if problems:
        raise ClusterRefused(f"cluster '{spec.name}' does not fit: " + "; ".join(problems))
    outcome = Outcome()
    try:
        await _allocate(client, spec, before, concurrency, progress, outcome)
        current = await gather_state(client, spec.name)
        outcome.updated = await _update(client, spec, current, concurrency)
        if remove:
            outcome.removed = await _remove_extra(client, spec, current)
            current = await gather_state(client, spec.name)
        await _monitoring(client, spec, current)
    except BaseException:
        await asyncio.shield(rollback(client, spec.name, before))
        raise
    outcome.state = await gather_state(client, spec.name)
    return outcome


async def _allocate(client: AsyncClient, spec: ClusterSpec, state: ClusterState, concurrency: int,
                    progress: Progress, outcome: Outcome) -> None:
    """Networks, groups and volumes start at once; each node's compute starts as soon as its own
    volumes and the networks exist, so volume and compute allocations overlap instead of
    waiting for each other in two barriers (the VIM spends much of each allocation waiting on
    its backend and its database, not computing)."""
    batch = Batch(concurrency)
    # Volumes get their own, smaller share of the connections so computes can start beside them.
    volume_batch = Batch(max(2, concurrency // 2), batch.failures)
    loop = asyncio.get_running_loop()
    network_ids = {name: n.networkResourceId for name, n in state.networks.items()}
    group_ids = {pool: g.groupId for pool, g in state.groups.items()}
    volumes: dict[tuple[str, int], asyncio.Future[str]] = {}
    for key, volume in state.volumes.items():
        volumes[key] = loop.create_future()
        volumes[key].set_result(volume.storageId)

    async def network(spec_network: Any) -> None:
        if spec_network.name not in network_ids:
            created = await client.networks.allocate(network_body(spec, spec_network), wait=PREFER_WAIT)
            created = await _finished(client, client.networks, created, created.networkResourceId)
            network_ids[spec_network.name] = created.networkResourceId
            outcome.created += 1
            progress("network")
        for subnet in spec_network.subnets:
            if f"{spec_network.name}/{subnet.name}" not in state.subnets:
                body = subnet_body(spec, spec_network, subnet, network_ids[spec_network.name])
                created = await client.subnets.allocate(body, wait=PREFER_WAIT)
                await _finished(client, client.subnets, created, created.resourceId)
                outcome.created += 1
                progress("subnet")

    async def volume(pool: Any, index: int, number: int) -> str:
        created = await client.storages.allocate(volume_body(spec, pool, index, number), wait=PREFER_WAIT)
        created = await _finished(client, client.storages, created, created.storageId)
        outcome.created += 1
        progress("volume")
        return str(created.storageId)

    async def group(pool: Any) -> None:
        created = await client.compute_affinity_groups.create(group_body(spec, pool))
        group_ids[pool.name] = created.groupId

    # Networks, subnets and groups are few and every compute needs them: they go first, outside
    # the batch limit, while the volumes queue up behind them.
    infrastructure = asyncio.gather(*(network(n) for n in spec.networks),
                                    *(group(p) for p in spec.nodePools if p.antiAffinity and p.name not in group_ids))
    for pool in spec.nodePools:
        for index in range(pool.count):
            for number in range(len(pool.volumes)):
                key = (node_key(pool.name, index), number)
                if key not in volumes:
                    volumes[key] = asyncio.ensure_future(volume_batch._one(lambda p=pool, i=index, n=number: volume(p, i, n)))

    async def allocate_compute(pool: Any, index: int, ids: list[str]) -> None:
        body = compute_body(spec, pool, index, network_ids, ids, group_ids.get(pool.name))
        created = await client.computes.allocate(body, wait=PREFER_WAIT)
        await _finished(client, client.computes, created, created.computeId)
        outcome.created += 1
        progress("compute")

    async def node(pool: Any, index: int) -> None:
        # The volumes are awaited outside the compute batch, so a waiting node holds no slot.
        ids = [await volumes[(node_key(pool.name, index), v)] for v in range(len(pool.volumes))]
        if ids and any(i is None for i in ids):
            return  # its volume was skipped after another failure
        await batch._one(lambda: allocate_compute(pool, index, ids))

    # Control-plane style pools (anti-affinity) first: their hosts are the scarce ones.
    nodes = sorted(missing_nodes(spec, state), key=lambda item: (not item[0].antiAffinity,))
    try:
        try:
            await infrastructure
        except BaseException as exc:
            batch.failures.append(exc)  # no further volume starts
            raise
        await asyncio.gather(*(node(p, i) for p, i in nodes), return_exceptions=True)
    finally:
        # Whatever happened, every volume call has ended before the caller looks at what exists.
        await asyncio.gather(*volumes.values(), return_exceptions=True)
    if batch.failure is not None:
        raise batch.failure


async def _update(client: AsyncClient, spec: ClusterSpec, state: ClusterState, concurrency: int) -> int:
    """A.2.2 / A.2.4: labels, flavours and volume sizes that differ from the description."""
    calls: list[Callable[[], Awaitable[Any]]] = []
    for pool in spec.nodePools:
        for index in range(pool.count):
            compute = state.computes.get(node_key(pool.name, index))
            if compute is None:
                continue
            changed = {key: value for key, value in pool.labels.items() if compute.metadata.get(key) != value}
            if changed:
                calls.append(lambda c=compute, m=changed: client.computes.update(c.computeId, {"metadata": m}))
            if compute.flavourId != pool.flavour:
                calls.append(lambda c=compute, f=pool.flavour: _scale_compute(client, c.computeId, f))
            for number, volume_spec in enumerate(pool.volumes):
                volume = state.volumes.get((node_key(pool.name, index), number))
                if volume is not None and volume.sizeOfStorage < volume_spec.sizeGb:
                    calls.append(lambda v=volume, s=volume_spec.sizeGb: client.storages.scale(v.storageId, s))
    for spec_network in spec.networks:
        network = state.networks.get(spec_network.name)
        if network is not None:
            changed = {k: v for k, v in spec_network.labels.items() if network.metadata.get(k) != v}
            if changed:
                calls.append(lambda n=network, m=changed: client.networks.update(n.networkResourceId, {"metadata": m}))
    await Batch(concurrency).run(calls)
    return len(calls)


async def _scale_compute(client: AsyncClient, compute_id: str, flavour: str) -> None:
    result = await client.computes.scale(compute_id, flavour, wait=PREFER_WAIT)
    result = await _finished(client, client.computes, result, compute_id)
    last = result.lastOperation
    if last is not None and last.status == "FAILED" and last.error is not None:
        from vimkit.client.errors import error_for

        raise error_for(last.error.status, last.error.model_dump())


async def _remove_extra(client: AsyncClient, spec: ClusterSpec, state: ClusterState) -> int:
    """Nodes beyond their pool's count, or of pools no longer described, go with their volumes."""
    counts = {pool.name: pool.count for pool in spec.nodePools}
    doomed = ClusterState(state.name)
    for key, compute in state.computes.items():
        pool = compute.metadata.get(POOL, "")
        if pool not in counts or node_index(key) >= counts[pool]:
            doomed.computes[key] = compute
    for key, volume in state.volumes.items():
        if key[0] in doomed.computes or volume.metadata.get(POOL) not in counts:
            doomed.volumes[key] = volume
    await delete_resources(client, doomed)
    return len(doomed.computes) + len(doomed.volumes)


async def _monitoring(client: AsyncClient, spec: ClusterSpec, state: ClusterState) -> None:
    """A.4.1: a PM job over the cluster's computes; A.2.6 / A.5.1: change and alarm subscriptions."""
    calls: list[Awaitable[Any]] = []
    if spec.monitoring.pmJob and not state.pm_jobs:
        calls.append(client.pm_jobs.create({
            "objectType": "VirtualCompute", "objectFilter": pm_filter(spec.name),
            "performanceMetricGroup": spec.monitoring.metricGroups,
            "collectionPeriod": spec.monitoring.collectionPeriod, "reportingPeriod": spec.monitoring.reportingPeriod}))
    target = spec.notifications
    if target is not None:
        base: dict[str, Any] = {"callbackUri": target.callbackUri}
        if target.userName:
            base["authentication"] = {"authType": ["BASIC"],
                                      "paramsBasic": {"userName": target.userName, "password": target.password or ""}}
        have = {api for api, _ in state.subscriptions}
        for api in RESOURCE_APIS:
            if api not in have:
                calls.append(client.subscriptions(api).create({**base, "filter": {"metadata": {CLUSTER: spec.name}}}))
        wanted = set(state.managed_ids())
        faults = [s for api, s in state.subscriptions if api == "faults"]
        if wanted and not any(set(s.filter.managedObjectIds or ()) == wanted for s in faults):
            # Alarms are filtered by object ids, so the subscription follows the node set.
            calls.append(client.subscriptions("faults").create({**base, "filter": {"managedObjectIds": sorted(wanted)}}))
            calls += [client.subscriptions("faults").delete(s.id) for s in faults]
    await asyncio.gather(*calls)


# --------------------------------------------------------------------------- rollback and delete


async def rollback(client: AsyncClient, name: str, before: ClusterState) -> None:
    """Terminate whatever of the cluster exists now and did not before this run."""
    now = await gather_state(client, name)
    keep = before.ids()
    doomed = ClusterState(name)
    doomed.networks = {k: v for k, v in now.networks.items() if v.networkResourceId not in keep}
    doomed.subnets = {k: v for k, v in now.subnets.items() if v.resourceId not in keep}
    doomed.computes = {k: v for k, v in now.computes.items() if v.computeId not in keep}
    doomed.volumes = {k: v for k, v in now.volumes.items() if v.storageId not in keep}
    doomed.groups = {k: v for k, v in now.groups.items() if v.groupId not in keep}
    doomed.pm_jobs = [j for j in now.pm_jobs if j.pmJobId not in keep]
    doomed.subscriptions = [(a, s) for a, s in now.subscriptions if s.id not in keep]
    doomed.surplus = [(k, r) for k, r in now.surplus if resource_id(k, r) not in keep]
    await delete_resources(client, doomed)


async def delete_cluster(client: AsyncClient, name: str, attempts: int = 5) -> int:
    """Delete every resource of the cluster; returns how many there were."""
    removed = 0
    for _ in range(attempts):
        state = await gather_state(client, name)
        if state.empty():
            return removed
        removed += len(state.ids())
        await delete_resources(client, state)
    state = await gather_state(client, name)
    if not state.empty():
        raise VimError(f"cluster '{name}': {len(state.ids())} resources could not be deleted")
    return removed


async def _quietly(call: Awaitable[Any]) -> None:
    try:
        await call
    except NotFound:
        pass  # already gone: what deletion wants


async def delete_resources(client: AsyncClient, state: ClusterState, concurrency: int = 32) -> None:
    """A.2.3 in dependency order: computes (they hold ports and volume attachments), then volumes,
    subnets, networks and groups. Subscriptions and PM jobs go first so that nobody is told about
    the teardown of a cluster that is being deleted on purpose."""
    await asyncio.gather(*(_quietly(client.subscriptions(api).delete(s.id)) for api, s in state.subscriptions),
                         *(_quietly(client.pm_jobs.delete(j.pmJobId)) for j in state.pm_jobs))
    surplus = {kind: [r for k, r in state.surplus if k == kind] for kind in ("compute", "volume", "subnet",
                                                                              "network", "group")}
    # The batch endpoints are one request each: the VIM starts every termination at once.
    computes = [c.computeId for c in (*state.computes.values(), *surplus["compute"])]
    if computes:
        await client.computes.terminate_many(computes)
        # The VIM answers after a bounded wait; anything still terminating is waited for here.
        await Batch(concurrency).run([lambda c=c: _quietly(client.computes.wait_gone(c, timeout=300))
                                      for c in computes])
    volumes = [v.storageId for v in (*state.volumes.values(), *surplus["volume"])]
    if volumes:
        await client.storages.terminate_many(volumes)
    subnets = [s.resourceId for s in (*state.subnets.values(), *surplus["subnet"])]
    if subnets:
        await client.subnets.terminate_many(subnets)
    networks = [n.networkResourceId for n in (*state.networks.values(), *surplus["network"])]
    if networks:
        await client.networks.terminate_many(networks)
    await asyncio.gather(*(_quietly(client.compute_affinity_groups.delete(g.groupId))
                           for g in (*state.groups.values(), *surplus["group"])))

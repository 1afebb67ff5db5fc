"""The driver protocol: the small async interface every infrastructure backend implements.

The VIM decides (placement, segmentation ids, addresses, MACs) and persists; a driver only
*realises* decisions on its infrastructure and reports what happens there. Three backends must
fit the same calls:

- ``sim`` (:mod:`vimkit.drivers.sim`): everything in memory with realistic timing and faults;
- ``qemu``: one QEMU process per compute driven over QMP, a Linux bridge (VLAN where the kernel
  has 802.1Q, VXLAN everywhere) per network inside a network namespace the VIM owns, one tap per
  port, qcow2 files per volume, counters from ``/proc`` and the taps;
- ``openstack`` (openstacksdk): Nova servers, Neutron networks/subnets/ports, Cinder volumes.

Hence the shape of the calls:

- Identifiers are the VIM's. A backend that has its own ids (Nova UUIDs) keeps the mapping itself
  (e.g. as server metadata or in its state directory) and reports its id as ``backend_ref``.
- Every spec carries everything the backend needs to act without calling back into the VIM: a
  :class:`ComputeSpec` holds the chosen host, flavour numbers and, per NIC, the port's MAC,
  addresses and the network's segmentation, so QEMU can create the tap and OpenStack can pass
  ``networks=[{"port": …}]`` with no lookup.
- A call returns when the backend reached the final state of the operation (QEMU: the QMP
  command answered and the process runs; OpenStack: the server is ACTIVE), or raises
  :class:`DriverError`. The VIM runs calls as background work and bounds them with its own
  timeouts; drivers apply their own per-operation deadlines and report ``TIMEOUT``.
- Ports are created first and plugged into a compute by ``create_compute`` (its NICs) or
  ``plug_port``; volumes likewise through ``create_compute`` (its volumes) or ``attach_volume``.
  That is Neutron's and Cinder's order, and QEMU's too (the tap exists before ``-netdev``).

Events: :meth:`Driver.events` returns an async iterator; each call is an independent
subscription that sees the events published after it subscribed. Events report what the VIM did
**not** ask for — a crash, a host or link going down, a volume failing, a guest powering itself
off — never the outcome of a call (that is the call's result), so the consumer never has to
de-duplicate. If a subscriber falls too far behind, its queue is cleared and it receives one
``RESYNC`` event: it must then reconcile with ``list_computes`` / ``list_volumes`` / ``list_ports``
(as a Kubernetes watcher re-lists), which keeps a slow consumer from exhausting memory without
silently losing state. An iterator ends when the driver is closed.

Metrics are pulled: the VIM's PM collector calls :meth:`Driver.sample_metrics` once per
collection tick. Utilisations are instantaneous percentages; NIC byte/packet figures are the
guest's cumulative counters, which reset when the guest's device is recreated (reboot, stop and
start, resume, migration); each sample carries the counter ``epoch`` so the PM code can tell a
reset from wrap-around and never emits a negative delta (pm-measurements.md §2). A backend may
also offer :meth:`ColumnarSampler.sample_metrics_columns`, the same samples as one
:class:`MetricColumn` per metric (parallel lists instead of one object per value);
:func:`sample_metric_columns` calls it when present and otherwise adapts ``sample_metrics``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from vimkit.drivers.events import EventHub, Subscription
from vimkit.drivers.model import (
    MEASUREMENT_SOURCES,
    DriverError,
    DriverErrorCode,
    EventKind,
    FaultKind,
    LinkState,
    MetricName,
    ObjectType,
    RunningState,
    VolumeState,
)
from vimkit.drivers.specs import (
    AttachmentInfo,
    Capabilities,
    ComputeInfo,
    ComputeResources,
    ComputeSpec,
    DriverEvent,
    FaultInfo,
    FixedIp,
    HostStatus,
    MetricSample,
    NetworkInfo,
    NetworkSpec,
    NicInfo,
    NicSpec,
    PortInfo,
    PortSpec,
    Segmentation,
    SnapshotInfo,
    SubnetInfo,
    SubnetSpec,
    UserData,
    VolumeAttachmentSpec,
    VolumeInfo,
    VolumeSpec,
)

@runtime_checkable
class Driver(Protocol):
    """An infrastructure backend. All methods but :meth:`capabilities` are coroutines; every
    call is safe to run concurrently with others on different objects."""

    name: str

    def capabilities(self) -> Capabilities: ...

    async def start(self) -> None:
        """Connect / restore state (QEMU: re-attach to the QMP sockets of running VMs)."""

    async def close(self) -> None:
        """Persist, disconnect and end every event iterator."""

    def events(self) -> AsyncIterator[DriverEvent]:
        """A new subscription to unsolicited events (see the module docstring)."""

    async def list_hosts(self) -> list[HostStatus]: ...

    # compute
    async def create_compute(self, spec: ComputeSpec) -> ComputeInfo: ...
    async def delete_compute(self, compute_id: str) -> None: ...
    async def get_compute(self, compute_id: str) -> ComputeInfo: ...
    async def list_computes(self) -> list[ComputeInfo]: ...
    async def start_compute(self, compute_id: str) -> ComputeInfo: ...
    async def stop_compute(self, compute_id: str) -> ComputeInfo: ...
    async def pause_compute(self, compute_id: str) -> ComputeInfo: ...
    async def unpause_compute(self, compute_id: str) -> ComputeInfo: ...
    async def suspend_compute(self, compute_id: str) -> ComputeInfo: ...
    async def resume_compute(self, compute_id: str) -> ComputeInfo: ...
    async def reboot_compute(self, compute_id: str, hard: bool = False) -> ComputeInfo: ...
    async def resize_compute(self, compute_id: str, resources: ComputeResources) -> ComputeInfo: ...
    async def migrate_compute(self, compute_id: str, target_host_id: str, live: bool = True) -> ComputeInfo: ...
    async def snapshot_compute(self, compute_id: str, snapshot_id: str) -> SnapshotInfo: ...
    async def delete_compute_snapshot(self, snapshot_id: str) -> None: ...

    # network
    async def create_network(self, spec: NetworkSpec) -> NetworkInfo: ...
    async def delete_network(self, network_id: str) -> None: ...
    async def create_subnet(self, spec: SubnetSpec) -> SubnetInfo: ...
    async def delete_subnet(self, subnet_id: str) -> None: ...
    async def create_port(self, spec: PortSpec) -> PortInfo: ...
    async def delete_port(self, port_id: str) -> None: ...
    async def list_ports(self) -> list[PortInfo]: ...
    async def plug_port(self, port_id: str, compute_id: str) -> NicInfo: ...
    async def unplug_port(self, port_id: str, compute_id: str) -> None: ...

    # storage
    async def create_volume(self, spec: VolumeSpec) -> VolumeInfo: ...
    async def delete_volume(self, volume_id: str) -> None: ...
    async def list_volumes(self) -> list[VolumeInfo]: ...
    async def extend_volume(self, volume_id: str, size_gb: int) -> VolumeInfo: ...
    async def migrate_volume(self, volume_id: str, pool_id: str) -> VolumeInfo: ...
    async def attach_volume(self, volume_id: str, compute_id: str) -> AttachmentInfo: ...
    async def detach_volume(self, volume_id: str, compute_id: str) -> None: ...
    async def snapshot_volume(self, volume_id: str, snapshot_id: str) -> SnapshotInfo: ...
    async def delete_volume_snapshot(self, snapshot_id: str) -> None: ...

    # metrics
    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        """Sample every running compute and every volume (or only ``object_ids``) now."""


@dataclass(frozen=True, slots=True)
class MetricColumn:
    """The samples of one metric taken by one call, as parallel sequences: sample ``i`` is
    ``values[i]`` of ``object_ids[i]`` (sub-object ``sub_object_ids[i]``, counter epoch
    ``epochs[i]``). ``sub_object_ids`` / ``epochs`` are None when every sample has none / epoch 0.
    Columns of one call may share their id sequences; none of them is mutated afterwards."""

    object_type: ObjectType
    metric: MetricName
    timestamp: datetime
    object_ids: Sequence[str]
    values: Sequence[float]
    sub_object_ids: Sequence[str | None] | None = None
    epochs: Sequence[int] | None = None

    def samples(self) -> list[MetricSample]:
        """The same samples one object each (``sample_metrics``' form)."""
        subs = self.sub_object_ids or [None] * len(self.object_ids)
        epochs = self.epochs or [0] * len(self.object_ids)
        return [MetricSample(self.object_type, object_id, self.metric, value, self.timestamp, sub, epoch)
                for object_id, value, sub, epoch in zip(self.object_ids, self.values, subs, epochs)]


@runtime_checkable
class ColumnarSampler(Protocol):
    """Optional: a backend that samples straight into columns (the simulator), sparing the PM
    collector one object per value when it measures thousands of objects."""

    async def sample_metrics_columns(self, object_ids: Sequence[str] | None = None) -> list[MetricColumn]:
        """What :meth:`Driver.sample_metrics` returns, one column per (object type, metric)."""


def metric_columns(samples: Iterable[MetricSample]) -> list[MetricColumn]:
    """The columnar form of per-sample results (the default adapter): one column per
    (object type, metric, timestamp), samples in their original order within each."""
    grouped: dict[tuple[ObjectType, MetricName, datetime], tuple[list[str], list[float], list[str | None],
                                                                 list[int]]] = {}
    for sample in samples:
        key = (sample.object_type, sample.metric, sample.timestamp)
        lists = grouped.get(key)
        if lists is None:
            lists = grouped[key] = ([], [], [], [])
        lists[0].append(sample.object_id)
        lists[1].append(sample.value)
        lists[2].append(sample.sub_object_id)
        lists[3].append(sample.epoch)
    return [MetricColumn(object_type, metric, timestamp, ids, values,
                         subs if any(sub is not None for sub in subs) else None,
                         epochs if any(epochs) else None)
            for (object_type, metric, timestamp), (ids, values, subs, epochs) in grouped.items()]


async def sample_metric_columns(driver: Driver, object_ids: Sequence[str] | None = None) -> list[MetricColumn]:
    """Sample in columns: the backend's own columnar call when it has one, else ``sample_metrics``
    adapted (so a backend without it, like QEMU, needs no change)."""
    if isinstance(driver, ColumnarSampler):
        return await driver.sample_metrics_columns(object_ids)
    return metric_columns(await driver.sample_metrics(object_ids))


@runtime_checkable
class FaultInjector(Protocol):
    """Implemented by backends that can fake failures (the simulator): ``POST /admin/v1/faults``."""

    async def inject(self, kind: FaultKind | str, target_id: str, params: Mapping[str, Any] | None = None) -> str: ...
    async def repair(self, fault_id: str) -> None: ...
    def faults(self) -> list[FaultInfo]: ...


__all__ = [
    "MEASUREMENT_SOURCES",
    "AttachmentInfo",
    "Capabilities",
    "ColumnarSampler",
    "ComputeInfo",
    "ComputeResources",
    "ComputeSpec",
    "Driver",
    "DriverError",
    "DriverErrorCode",
    "DriverEvent",
    "EventHub",
    "EventKind",
    "FaultInfo",
    "FaultInjector",
    "FaultKind",
    "FixedIp",
    "HostStatus",
    "LinkState",
    "MetricColumn",
    "MetricName",
    "MetricSample",
    "NetworkInfo",
    "NetworkSpec",
    "NicInfo",
    "NicSpec",
    "ObjectType",
    "PortInfo",
    "PortSpec",
    "RunningState",
    "Segmentation",
    "SnapshotInfo",
    "Subscription",
    "SubnetInfo",
    "SubnetSpec",
    "UserData",
    "VolumeAttachmentSpec",
    "VolumeInfo",
    "VolumeSpec",
    "VolumeState",
    "metric_columns",
    "sample_metric_columns",
]

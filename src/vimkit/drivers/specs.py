"""What the VIM asks a driver for (specs) and what the driver reports back (results, events,
metric samples, capabilities): frozen dataclasses, cheap to build and safe to share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vimkit.drivers.model import (
    EventKind,
    FaultKind,
    LinkState,
    MetricName,
    ObjectType,
    RunningState,
    VolumeState,
)

# --------------------------------------------------------------------------- specs (what the VIM asks)


@dataclass(frozen=True, slots=True)
class Segmentation:
    """How a network is realised on the wire (decided by the VIM from the provider ranges)."""

    network_type: str                 # "vlan" | "vxlan" | "flat"
    segmentation_id: int | None       # VLAN id or VNI; None for flat
    physical_network: str | None = None
    mtu: int = 1500
    provider_network_id: str | None = None


@dataclass(frozen=True, slots=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class NicSpec:
    """One NIC of a compute: an existing port, with what the backend needs to wire it."""

    port_id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    segmentation: Segmentation | None = None
    vnic_type: str = "NORMAL"         # NORMAL | VIRTIO | SR_IOV | PCI_PASSTHROUGH | MACVTAP | VHOST_USER
    bandwidth_mbps: float | None = None


@dataclass(frozen=True, slots=True)
class VolumeAttachmentSpec:
    volume_id: str
    boot_index: int | None = None     # 0 = boot from this volume
    device: str | None = None         # requested guest device name; the backend may choose


@dataclass(frozen=True, slots=True)
class UserData:
    content: str
    method: str = "CONFIG-DRIVE"      # how the guest gets it: CONFIG-DRIVE | METADATA-SERVICE


@dataclass(frozen=True, slots=True)
class ComputeSpec:
    """Everything needed to create one compute on the host placement chose."""

    compute_id: str
    name: str
    host_id: str
    zone_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image_ref: str | None = None
    cpu_architecture: str | None = None
    cpu_pinning: bool = False
    numa: bool = False
    user_data: UserData | None = None
    nics: tuple[NicSpec, ...] = ()
    volumes: tuple[VolumeAttachmentSpec, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    resource_group_id: str | None = None


@dataclass(frozen=True, slots=True)
class ComputeResources:
    """New flavour numbers for ``resize_compute``."""

    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    network_id: str
    name: str
    segmentation: Segmentation
    shared: bool = False
    admin_state_up: bool = True
    zone_ids: tuple[str, ...] = ()    # where it must be reachable; empty = everywhere
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    subnet_id: str
    network_id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    dhcp_enabled: bool = True
    allocation_pools: tuple[tuple[str, str], ...] = ()
    dns_nameservers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PortSpec:
    port_id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    vnic_type: str = "NORMAL"
    admin_state_up: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    volume_id: str
    name: str
    size_gb: int
    pool_id: str                      # chosen by storage placement
    zone_id: str
    type_of_storage: str = "volume"
    rdma_enabled: bool = False
    multi_attach: bool = False
    image_ref: str | None = None      # create from an image (a bootable volume)
    metadata: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- results (what the backend reports)


@dataclass(frozen=True, slots=True)
class NicInfo:
    port_id: str
    device: str                       # guest-visible name (eth0) or host-side tap name
    link: LinkState = LinkState.UP


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    volume_id: str
    compute_id: str
    device: str                       # e.g. /dev/vdb


@dataclass(frozen=True, slots=True)
class ComputeInfo:
    compute_id: str
    host_id: str
    running_state: RunningState
    vcpus: int
    memory_mb: int
    disk_gb: int
    nics: tuple[NicInfo, ...] = ()
    attachments: tuple[AttachmentInfo, ...] = ()
    backend_ref: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    network_id: str
    segmentation: Segmentation
    operational: bool = True
    backend_ref: str | None = None


@dataclass(frozen=True, slots=True)
class SubnetInfo:
    subnet_id: str
    network_id: str
    backend_ref: str | None = None


@dataclass(frozen=True, slots=True)
class PortInfo:
    port_id: str
    network_id: str
    mac_address: str
    compute_id: str | None = None     # the compute it is plugged into
    link: LinkState = LinkState.UP
    backend_ref: str | None = None


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    volume_id: str
    pool_id: str
    size_gb: int
    state: VolumeState
    attachments: tuple[AttachmentInfo, ...] = ()
    backend_ref: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    snapshot_id: str
    source_id: str                    # the compute or volume
    size_gb: int
    created_at: datetime
    backend_ref: str | None = None


@dataclass(frozen=True, slots=True)
class HostStatus:
    host_id: str
    up: bool
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriverEvent:
    """Something happened on the infrastructure that nobody asked for.

    ``cause_event_id`` links a consequence to its root cause (a compute crashed because its host
    went down), which the fault-management module turns into alarm correlation.
    """

    event_id: str
    kind: EventKind
    object_type: ObjectType
    object_id: str
    timestamp: datetime
    details: Mapping[str, Any] = field(default_factory=dict)
    fault_id: str | None = None
    cause_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One sampled value. ``sub_object_id`` names the NIC (port id) or disk it is about;
    ``epoch`` changes whenever a cumulative counter restarts from zero."""

    object_type: ObjectType
    object_id: str
    metric: MetricName
    value: float
    timestamp: datetime
    sub_object_id: str | None = None
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; the VIM refuses (409/422) what the backend cannot do, up front."""

    name: str
    # Operate commands it supports: START, STOP, PAUSE, UNPAUSE, SUSPEND, RESUME, REBOOT, CREATE/DELETE_SNAPSHOT
    compute_operations: frozenset[str]
    network_types: frozenset[str]               # vlan / vxlan / flat actually realisable here
    live_migration: bool = False
    cold_migration: bool = False
    online_resize: bool = False                 # resize without stopping the guest
    volume_online_extend: bool = False
    volume_snapshots: bool = False
    multi_attach: bool = False
    metrics: frozenset[MetricName] = frozenset()
    fault_injection: bool = False
    schedules_itself: bool = False              # the backend picks hosts; ComputeInfo.host_id reports it
    persistent: bool = True                     # state survives a VIM restart
    max_concurrent_creates: int | None = None   # QEMU under TCG: about 2 x cores


@dataclass(frozen=True, slots=True)
class FaultInfo:
    fault_id: str
    kind: FaultKind
    target_id: str
    params: Mapping[str, Any]
    created_at: datetime

"""Compute information elements (ifa005-reference.md §4.1–4.2)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from vimkit.models.common import (
    AffinityOrAntiAffinityConstraint,
    AffinityScope,
    AffinityType,
    Enforcement,
    ErrorInfo,
    Identifier,
    Link,
    Metadata,
    OperationalState,
    ProvisioningState,
    RequestModel,
    StrictBool,
    StrictInt,
    StrictNumber,
)

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class CpuPinningPolicy(str, Enum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"


class VirtualNicType(str, Enum):
    """How a NIC is realised. IFA leaves the values open; these cover virtio, SR-IOV and passthrough."""

    NORMAL = "NORMAL"
    VIRTIO = "VIRTIO"
    SR_IOV = "SR_IOV"
    PCI_PASSTHROUGH = "PCI_PASSTHROUGH"
    MACVTAP = "MACVTAP"
    VHOST_USER = "VHOST_USER"


class VirtualCpuPinningData(RequestModel):
    virtualCpuPinningPolicy: CpuPinningPolicy | None = None
    virtualCpuPinningRule: list[ShortText] | None = Field(None, max_length=1024)


class VirtualCpuData(RequestModel):
    cpuArchitecture: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        None, description="Required CPU architecture (e.g. x86_64, aarch64); absent = any."
    )
    numVirtualCpu: StrictInt = Field(ge=1, le=1024, description="Number of virtual CPUs.")
    cpuClock: StrictNumber | None = Field(None, gt=0, le=100_000, description="Minimum clock in MHz.")
    virtualCpuOversubscriptionPolicy: ShortText | None = None
    virtualCpuPinning: VirtualCpuPinningData | None = None


class VirtualMemoryData(RequestModel):
    virtualMemSize: StrictNumber = Field(gt=0, le=16 * 1024 * 1024, description="Memory in MB (2^20 bytes).")
    virtualMemOversubscriptionPolicy: ShortText | None = None
    numaEnabled: StrictBool | None = None


class VirtualStorageData(RequestModel):
    typeOfStorage: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Kind of storage, e.g. volume, root, ephemeral."
    )
    sizeOfStorage: StrictNumber = Field(ge=0, le=1_048_576, description="Size in GB (2^30 bytes).")
    rdmaEnabled: StrictBool | None = None


class VirtualNetworkInterfaceData(RequestModel):
    networkId: Identifier | None = None
    networkPortId: Identifier | None = None
    typeVirtualNic: VirtualNicType = VirtualNicType.NORMAL
    typeConfiguration: list[Any] | None = Field(None, max_length=64)
    bandwidth: StrictNumber | None = Field(None, ge=0, description="Bandwidth in Mbps.")
    accelerationCapability: list[ShortText] | None = Field(None, max_length=64)
    metadata: Metadata | None = None


class VirtualComputeFlavourData(RequestModel):
    """The members of VirtualComputeFlavour a consumer provides."""

    isPublic: StrictBool = Field(True, description="Visible to every resource group when true.")
    accelerationCapability: list[ShortText] = Field(default_factory=list, max_length=64)
    virtualMemory: VirtualMemoryData
    virtualCpu: VirtualCpuData
    storageAttributes: list[VirtualStorageData] = Field(default_factory=list, max_length=64)
    virtualNetworkInterface: list[VirtualNetworkInterfaceData] = Field(
        default_factory=list, max_length=64
    )
    metadata: Metadata = Field(default_factory=dict)


class ComputeFlavourCreate(VirtualComputeFlavourData):
    """Create Compute Flavour input; ``flavourId`` is assigned by the VIM when absent (IFA R4)."""

    flavourId: Identifier | None = None


class FlavourLinks(BaseModel):
    self: Link


class VirtualComputeFlavour(VirtualComputeFlavourData):
    """VirtualComputeFlavour (IFA 005 8.4.2.2) as returned by the VIM."""

    flavourId: Identifier
    links: FlavourLinks | None = Field(None, alias="_links")


# --------------------------------------------------------------------------- computes (rest-binding.md §3)


class RunningState(str, Enum):
    """Extension (rest-binding.md §1.5): what the guest is doing."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
    CRASHED = "CRASHED"


class UserDataMethod(str, Enum):
    CONFIG_DRIVE = "CONFIG-DRIVE"
    METADATA_SERVICE = "METADATA-SERVICE"


class UserData(RequestModel):
    """UserData (IFA 005 8.4.10): opaque boot-time data the VIM hands to the guest unchanged."""

    content: Annotated[str, StringConstraints(max_length=65_536)] = Field(
        description="At most 64 KiB, as Nova allows.")
    method: UserDataMethod = UserDataMethod.CONFIG_DRIVE


class VirtualInterfaceData(RequestModel):
    """One NIC of Allocate: IFA VirtualInterfaceData (ipAddress, macAddress) with the extensions
    ``networkId`` / ``networkPortId`` (rest-binding.md §3). Entry *i* completes the flavour's
    *i*-th NIC template; entries beyond the templates add NICs."""

    networkId: Identifier | None = Field(None, description="Extension: create a port on this network for the NIC.")
    networkPortId: Identifier | None = Field(None, description="Extension: use this existing, unattached port.")
    ipAddress: list[Annotated[str, StringConstraints(min_length=2, max_length=64)]] | None = Field(
        None, max_length=8, description="Fixed addresses wanted on the NIC (with networkId).")
    macAddress: Annotated[str, StringConstraints(min_length=11, max_length=17)] | None = Field(
        None, description="Wanted MAC (with networkId).")
    typeVirtualNic: VirtualNicType | None = None
    bandwidth: StrictNumber | None = Field(None, ge=0, description="Bandwidth in Mbps.")
    metadata: Metadata | None = None


class ComputeLocationConstraints(RequestModel):
    """Extension structure of ``locationConstraints`` (rest-binding.md §3)."""

    zoneId: Identifier | None = None
    hostId: Identifier | None = None


class ComputeAllocateRequest(RequestModel):
    """Allocate Virtualised Compute Resource (IFA 005 7.3.1.2)."""

    computeName: ShortText | None = None
    reservationId: Identifier | None = Field(None, description="Accepted and recorded; reservations are not managed yet.")
    computeFlavourId: Identifier
    vcImageId: Identifier | None = None
    affinityOrAntiAffinityConstraints: list[AffinityOrAntiAffinityConstraint] = Field(
        default_factory=list, max_length=32)
    interfaceData: list[VirtualInterfaceData] = Field(default_factory=list, max_length=16)
    userData: UserData | None = None
    metadata: Metadata = Field(default_factory=dict)
    resourceGroupId: Identifier | None = None
    locationConstraints: ComputeLocationConstraints | None = None
    storageIds: list[Identifier] = Field(default_factory=list, max_length=26,
                                         description="Extension: volumes attached at boot.")


class NetworkInterfaceChange(RequestModel):
    """``networkInterfaceUpdate`` item: the NIC (by resourceId) and what changes on it."""

    resourceId: Identifier
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)],
                   Annotated[str, StringConstraints(max_length=1024)] | None] | None = Field(None, max_length=128)
    bandwidth: StrictNumber | None = Field(None, ge=0)
    operationalState: OperationalState | None = None


class ComputeUpdateRequest(RequestModel):
    """Update Virtualised Compute Resource (IFA 005 7.3.1.4); ``metadata`` keys set to null are removed."""

    networkInterfaceNew: list[VirtualInterfaceData] = Field(default_factory=list, max_length=16)
    networkInterfaceUpdate: list[NetworkInterfaceChange] = Field(default_factory=list, max_length=16)
    networkInterfaceDelete: list[Identifier] = Field(default_factory=list, max_length=16)
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)],
                   Annotated[str, StringConstraints(max_length=1024)] | None] | None = Field(None, max_length=128)
    virtualDiskAttach: list[Identifier] = Field(default_factory=list, max_length=26, description="Extension.")
    virtualDiskDetach: list[Identifier] = Field(default_factory=list, max_length=26, description="Extension.")


class ComputeOperation(str, Enum):
    START = "START"
    STOP = "STOP"
    PAUSE = "PAUSE"
    UNPAUSE = "UNPAUSE"
    SUSPEND = "SUSPEND"
    RESUME = "RESUME"
    REBOOT = "REBOOT"
    CREATE_SNAPSHOT = "CREATE_SNAPSHOT"
    DELETE_SNAPSHOT = "DELETE_SNAPSHOT"


class ComputeOperateRequest(RequestModel):
    """Operate Virtualised Compute Resource. ``computeOperationInputData``: ``type`` = SOFT|HARD for
    REBOOT, ``snapshotName`` for CREATE_SNAPSHOT, ``snapshotId`` (required) for DELETE_SNAPSHOT."""

    computeOperation: ComputeOperation
    computeOperationInputData: Metadata = Field(default_factory=dict)


class ComputeScaleRequest(RequestModel):
    computeFlavourId: Identifier


class MigrationType(str, Enum):
    LIVE_MIGRATION = "LIVE_MIGRATION"
    OFFLINE_MIGRATION = "OFFLINE_MIGRATION"


class ComputeMigrateRequest(RequestModel):
    migrationType: MigrationType = MigrationType.LIVE_MIGRATION
    affinityOrAntiAffinityConstraints: list[AffinityOrAntiAffinityConstraint] | None = Field(None, max_length=32)
    migrationConstraint: ComputeLocationConstraints | None = None


class ComputeTerminateRequest(RequestModel):
    computeId: list[Identifier] = Field(min_length=1, max_length=1000)


class ComputeTerminateResult(BaseModel):
    computeId: list[str] = Field(description="The computes terminated (best effort).")


class ComputeLinks(BaseModel):
    self: Link


class VirtualCpu(BaseModel):
    cpuArchitecture: str | None = None
    numVirtualCpu: int
    cpuClock: float | None = None
    virtualCpuOversubscriptionPolicy: str | None = None
    virtualCpuPinning: dict[str, Any] | None = None


class VirtualMemory(BaseModel):
    virtualMemSize: float
    virtualMemOversubscriptionPolicy: str | None = None
    numaEnabled: bool | None = None


class VirtualNetworkInterface(BaseModel):
    """VirtualNetworkInterface (IFA 005 8.4.3.6)."""

    resourceId: str = Field(description="The NIC; vimkit uses the id of the port behind it.")
    ownerId: str
    networkId: str | None = None
    networkPortId: str | None = None
    ipAddress: list[str] = Field(default_factory=list)
    typeVirtualNic: str
    typeConfiguration: list[Any] | None = None
    macAddress: str | None = None
    bandwidth: float | None = None
    accelerationCapability: list[str] = Field(default_factory=list)
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    portCreatedByVim: bool = Field(False, description="Extension: the VIM created the port for this NIC "
                                   "(from networkId) and deletes it with the NIC.")


class VirtualDisk(BaseModel):
    storageId: str
    device: str | None = None
    typeOfStorage: str | None = None
    sizeOfStorage: float | None = None


class ComputeSnapshot(BaseModel):
    snapshotId: str
    snapshotName: str | None = None
    sizeOfStorage: float | None = None
    createdAt: str


class LastOperation(BaseModel):
    """Extension: the last operate/scale/migrate/update task and its outcome."""

    operation: str
    status: str = Field(description="PROCESSING, COMPLETED or FAILED.")
    startedAt: str
    finishedAt: str | None = None
    error: ErrorInfo | None = None


class VirtualCompute(BaseModel):
    """VirtualCompute (IFA 005 8.4.3.2) as returned by the VIM."""

    computeId: Identifier
    computeName: str | None = None
    flavourId: str
    accelerationCapability: list[str] = Field(default_factory=list)
    virtualCpu: VirtualCpu
    virtualMemory: VirtualMemory
    virtualNetworkInterface: list[VirtualNetworkInterface] = Field(default_factory=list)
    virtualDisks: list[VirtualDisk] = Field(default_factory=list)
    vcImageId: str | None = None
    zoneId: str | None = None
    hostId: str | None = None
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str
    provisioningState: ProvisioningState = Field(description="Extension (rest-binding.md §1.5).")
    runningState: RunningState | None = Field(None, description="Extension (rest-binding.md §1.5).")
    error: ErrorInfo | None = Field(None, description="Extension: why the compute is FAILED.")
    lastOperation: LastOperation | None = None
    snapshots: list[ComputeSnapshot] = Field(default_factory=list, description="Extension.")
    reservationId: str | None = None
    affinityOrAntiAffinityConstraints: list[dict[str, Any]] = Field(default_factory=list)
    hostState: str | None = Field(None, description="Extension: the host's admin state when it is not ENABLED "
                                  "(MAINTENANCE, DISABLED) or DOWN.")
    createdAt: str | None = Field(None, description="Extension.")
    links: ComputeLinks | None = Field(None, alias="_links")


class ComputeOperateResult(VirtualCompute):
    computeOperationOutputData: dict[str, Any] = Field(default_factory=dict)


class ComputeAffinityGroupCreate(RequestModel):
    """Create Compute Resource Affinity Or Anti-Affinity Constraints Group (IFA 005 7.3.1.9)."""

    groupName: ShortText | None = None
    type: AffinityType
    scope: AffinityScope = AffinityScope.NFVI_NODE
    enforcement: Enforcement = Field(Enforcement.HARD, description="Extension.")
    metadata: Metadata = Field(default_factory=dict)


class ComputeAffinityGroup(BaseModel):
    groupId: str
    groupName: str | None = None
    type: AffinityType
    scope: AffinityScope
    enforcement: Enforcement
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str
    members: list[str] = Field(default_factory=list, description="Extension: computes placed under the group.")
    links: ComputeLinks | None = Field(None, alias="_links")


class VirtualComputeResourceInformation(BaseModel):
    """VirtualComputeResourceInformation (IFA 005 8.3.3.2): one consumable kind of host."""

    computeResourceTypeId: str
    virtualCPU: dict[str, Any]
    virtualMemory: dict[str, Any]
    accelerationCapability: list[str] = Field(default_factory=list)
    zoneIds: list[str] = Field(default_factory=list, description="Extension.")
    hosts: int = Field(description="Extension: hosts of this kind that take new computes.")

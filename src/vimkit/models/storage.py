"""Storage information elements (ifa005-reference.md §2.7–2.9, §4.3, §4.6, §4.7).

Request models refuse unknown members and take strict numbers; the response models describe what
the VIM returns. Members IFA 005 does not define are marked "Extension" in their description.
"""

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
)

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
StorageType = Annotated[str, StringConstraints(min_length=1, max_length=64)]
SizeGb = Annotated[StrictInt, Field(ge=1, le=1_048_576, description="Size in GB (2^30 bytes).")]


class VirtualStorageDataIn(RequestModel):
    """VirtualStorageData (IFA 005 8.4.6.3) of a volume to allocate."""

    typeOfStorage: StorageType = Field(
        description="A storage type offered by the VIM (GET /storage-info/v1/resource_types), e.g. volume."
    )
    sizeOfStorage: SizeGb
    rdmaEnabled: StrictBool | None = Field(None, description="The volume must be in an RDMA-capable pool.")
    multiAttach: StrictBool = Field(
        False,
        description="Extension: the volume may be attached to several computes at once (needs a "
        "multi-attach pool). Without it, attaching an attached volume is a 409.",
    )


class StorageUpdateData(RequestModel):
    """``updateStorageData``: only the size can change (grow only, as Scale); the type, RDMA
    and multi-attach of a volume are fixed at allocation."""

    typeOfStorage: StorageType | None = None
    sizeOfStorage: SizeGb | None = None
    rdmaEnabled: StrictBool | None = None
    multiAttach: StrictBool | None = None


class StorageLocationConstraints(RequestModel):
    zoneId: Identifier | None = Field(None, description="Resource zone the volume must be in.")
    poolId: Identifier | None = Field(None, description="Extension: storage pool the volume must be in.")


class StorageAllocateRequest(RequestModel):
    """Allocate Virtualised Storage Resource (IFA 005 7.5.1.2)."""

    storageName: ShortText | None = None
    reservationId: Identifier | None = Field(None, description="Accepted and recorded; vimkit does not manage reservations yet.")
    storageData: VirtualStorageDataIn
    affinityOrAntiAffinityConstraints: list[AffinityOrAntiAffinityConstraint] = Field(
        default_factory=list, max_length=32
    )
    locationConstraints: StorageLocationConstraints | None = None
    metadata: Metadata = Field(default_factory=dict)
    resourceGroupId: Identifier | None = None
    sourceSnapshotId: Identifier | None = Field(
        None, description="Extension: create the volume from this snapshot (sizeOfStorage must be "
        "at least the size of the snapshotted volume)."
    )


class StorageUpdateRequest(RequestModel):
    """Update Virtualised Storage Resource (merge patch): ``metadata`` keys set to null are removed."""

    storageName: ShortText | None = Field(None, description="Extension: rename the volume.")
    updateStorageData: StorageUpdateData | None = None
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)],
                   Annotated[str, StringConstraints(max_length=1024)] | None] | None = Field(None, max_length=128)


class StorageOperation(str, Enum):
    CREATE_SNAPSHOT = "CREATE_SNAPSHOT"
    DELETE_SNAPSHOT = "DELETE_SNAPSHOT"


class StorageOperateRequest(RequestModel):
    """Operate Virtualised Storage Resource. ``storageOperationInputData``: ``snapshotName`` for
    CREATE_SNAPSHOT, ``snapshotId`` (required) for DELETE_SNAPSHOT."""

    storageOperation: StorageOperation
    storageOperationInputData: Metadata = Field(default_factory=dict)


class StorageScaleRequest(RequestModel):
    """Scale Virtualised Storage Resource: the new size, which must be larger (grow only)."""

    sizeOfStorage: SizeGb


class MigrationConstraint(RequestModel):
    zoneId: Identifier | None = None
    poolId: Identifier | None = Field(None, description="Extension: the target storage pool.")


class StorageMigrateRequest(RequestModel):
    """Migrate Virtualised Storage Resource: move the volume to another pool."""

    migrationConstraint: MigrationConstraint | None = None


class StorageTerminateRequest(RequestModel):
    storageId: list[Identifier] = Field(min_length=1, max_length=1000)


class StorageTerminateResult(BaseModel):
    storageId: list[str] = Field(description="The volumes terminated (best effort).")


class StorageAttachment(BaseModel):
    computeId: str
    hostId: str | None = None
    device: str | None = None


class StorageSnapshot(BaseModel):
    snapshotId: str
    snapshotName: str | None = None
    sizeOfStorage: int = Field(description="Size of the volume when snapshotted (GB).")
    usedGb: int | None = None
    createdAt: str


class StorageLinks(BaseModel):
    self: Link


class VirtualStorage(BaseModel):
    """VirtualStorage (IFA 005 8.4.7.2) as returned by the VIM."""

    storageId: Identifier
    storageName: str | None = None
    flavourId: str | None = None
    typeOfStorage: str
    sizeOfStorage: int
    rdmaEnabled: bool = False
    ownerId: str | None = Field(None, description="The compute the volume is attached to (the first one "
                                "for a multi-attach volume); absent when unattached.")
    zoneId: str | None = None
    hostId: str | None = Field(None, description="Absent: pool volumes live on no compute host.")
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str
    provisioningState: ProvisioningState = Field(description="Extension (rest-binding §1.5).")
    error: ErrorInfo | None = Field(None, description="Extension: why the volume is FAILED or DISABLED.")
    poolId: str | None = Field(None, description="Extension: the storage pool holding the volume.")
    multiAttach: bool = Field(False, description="Extension.")
    attachments: list[StorageAttachment] = Field(default_factory=list, description="Extension.")
    snapshots: list[StorageSnapshot] = Field(default_factory=list, description="Extension.")
    sourceSnapshotId: str | None = Field(None, description="Extension.")
    reservationId: str | None = None
    affinityOrAntiAffinityConstraints: list[dict[str, Any]] = Field(default_factory=list)
    createdAt: str | None = Field(None, description="Extension.")
    links: StorageLinks | None = Field(None, alias="_links")


class StorageOperateResult(VirtualStorage):
    storageOperationOutputData: dict[str, Any] = Field(
        default_factory=dict, description="CREATE_SNAPSHOT: the snapshot (snapshotId, sizeOfStorage …)."
    )


# --------------------------------------------------------------------------- affinity groups


class StorageAffinityGroupCreate(RequestModel):
    """Create Storage Resource Affinity Or Anti-Affinity Constraints Group."""

    affinityGroupName: ShortText | None = None
    type: AffinityType
    scope: AffinityScope = AffinityScope.NFVI_NODE
    enforcement: Enforcement = Field(Enforcement.HARD, description="Extension.")
    metadata: Metadata = Field(default_factory=dict)


class StorageAffinityGroup(BaseModel):
    groupId: str
    affinityGroupName: str | None = None
    type: AffinityType
    scope: AffinityScope
    enforcement: Enforcement
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str
    links: StorageLinks | None = Field(None, alias="_links")


# --------------------------------------------------------------------------- information


class VirtualStorageResourceInformation(BaseModel):
    """VirtualStorageResourceInformation (IFA 005 8.3.4)."""

    storageResourceTypeId: str
    typeOfStorage: str
    sizeOfStorage: int | None = Field(None, description="The largest volume of this type allocatable now (GB).")
    rdmaSupported: bool = False
    multiAttachSupported: bool = Field(False, description="Extension.")
    zoneIds: list[str] = Field(default_factory=list, description="Extension: zones offering the type.")


class StorageCapacity(BaseModel):
    """Capacity of storage in GB, consistent with what allocation allows (free space on pools that are up)."""

    zoneId: str | None = None
    resourceTypeId: str | None = None
    pools: int
    totalGb: int = Field(description="Allocatable, after allocation ratios (thin provisioning).")
    allocatedGb: int
    reservedGb: int = Field(0, description="Held by reservations (none are taken yet).")
    availableGb: int = Field(description="Free on pools that are up.")
    unavailableGb: int = Field(description="Free on pools that have failed.")
    largestAvailableGb: int = Field(description="The largest single volume allocatable now.")

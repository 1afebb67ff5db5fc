"""Compute information elements (ifa005-reference.md §4.1–4.2)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from vimkit.models.common import (
    Identifier,
    Link,
    Metadata,
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

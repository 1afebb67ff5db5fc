"""Network information elements (ifa005-reference.md §4.4–4.5, §4.7): networks, subnets, ports.

Request models take the IFA request-side elements (VirtualNetworkData, NetworkSubnetData,
VirtualNetworkPortData) with the vimkit extensions listed in ``docs/network.md``; response models
are the instantiated elements (VirtualNetwork, NetworkSubnet, VirtualNetworkPort) plus the
``provisioningState`` / ``error`` extensions of rest-binding.md §1.5.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from vimkit.models.common import (
    AffinityResourceList,
    AffinityType,
    Enforcement,
    Identifier,
    Metadata,
    OperationalState,
    ProvisioningState,
    RequestModel,
    StrictBool,
    StrictInt,
    StrictNumber,
)


ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
AddressText = Annotated[str, StringConstraints(min_length=2, max_length=64)]
MacText = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]


class NetworkType(str, Enum):
    vlan = "vlan"
    vxlan = "vxlan"
    flat = "flat"


class IpVersion(str, Enum):
    IPv4 = "IPv4"
    IPv6 = "IPv6"


class NetworkQoS(RequestModel):
    qosName: ShortText = Field(description="QoS parameter name, e.g. latency, jitter.")
    qosValue: StrictNumber | ShortText = Field(description="Its value (number or string).")


class NetworkAffinityScope(str, Enum):
    """Network scopes of IFA 005 8.4.8.2, plus ZONE (extension). NFVI_NODE is the default. What
    each means for a network and for a port is in docs/network.md (Network affinity)."""

    NFVI_NODE = "NFVI_NODE"
    PHYSICAL_NIC = "PHYSICAL_NIC"
    PHYSICAL_NETWORK = "PHYSICAL_NETWORK"
    VIRTUAL_SWITCH = "VIRTUAL_SWITCH"
    VIRTUAL_ROUTER = "VIRTUAL_ROUTER"
    ZONE = "ZONE"


class NetworkAffinityConstraint(RequestModel):
    """AffinityOrAntiAffinityConstraint (IFA 005 8.4.8.2) of a network or a port: against the
    listed networks and ports, or against the members of a network affinity group."""

    type: AffinityType
    scope: NetworkAffinityScope = Field(
        NetworkAffinityScope.NFVI_NODE, description="Ignored with a group: the group's scope applies.")
    affinityOrAntiAffinityResourceList: AffinityResourceList | None = None
    affinityOrAntiAffinityResourceGroupId: Identifier | None = None
    enforcement: Enforcement = Field(
        Enforcement.HARD, description="Extension: SOFT makes the rule best effort. Ignored with a group.")

    @model_validator(mode="after")
    def _exactly_one(self) -> NetworkAffinityConstraint:
        given = (self.affinityOrAntiAffinityResourceList is not None) + (
            self.affinityOrAntiAffinityResourceGroupId is not None
        )
        if given != 1:
            raise ValueError(
                "exactly one of affinityOrAntiAffinityResourceList and "
                "affinityOrAntiAffinityResourceGroupId is required"
            )
        return self


Constraints = Annotated[list[NetworkAffinityConstraint], Field(
    max_length=32, description="Placement rules (IFA 005 Allocate input); see docs/network.md.")]


def _segmentation_id(value: Any) -> Any:
    """IFA types the segment id as a string; vimkit accepts a JSON integer or a digit string."""
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 9:
            raise ValueError("must be a non-negative integer (or a string of digits)")
        return int(value)
    return value


class VirtualNetworkData(RequestModel):
    """Allocate body of ``POST /networks`` (VirtualNetworkData, 8.4.4.2, plus extensions)."""

    networkResourceName: ShortText | None = None
    reservationId: Identifier | None = None
    bandwidth: StrictNumber = Field(0, ge=0, le=10_000_000, description="Minimum bandwidth in Mbps.")
    networkType: NetworkType | None = Field(
        None, description="vlan, vxlan or flat; absent = the type of `providerNetwork`, or vxlan."
    )
    segmentationId: StrictInt | None = Field(
        None, ge=0, description="VLAN id or VNI; absent = allocated from the provider network's ranges."
    )
    providerNetwork: Identifier | None = Field(
        None, description="Provider network (resourceTypeId of /network-info/v1/resource_types)."
    )
    networkQoS: list[NetworkQoS] = Field(default_factory=list, max_length=64)
    isShared: StrictBool = Field(False, description="Visible to and usable by every resource group (admin only).")
    sharingCriteria: ShortText | None = None
    metadata: Metadata | None = None
    resourceGroupId: Identifier | None = None
    affinityOrAntiAffinityConstraints: Constraints = Field(default_factory=list)

    _coerce_segment = field_validator("segmentationId", mode="before")(_segmentation_id)


class VirtualNetworkUpdate(RequestModel):
    """PATCH body (merge patch) of a network."""

    networkResourceName: ShortText | None = None
    bandwidth: StrictNumber | None = Field(None, ge=0, le=10_000_000)
    networkQoS: list[NetworkQoS] | None = Field(None, max_length=64)
    isShared: StrictBool | None = None
    sharingCriteria: ShortText | None = None
    operationalState: OperationalState | None = None
    metadata: dict[str, str | None] | None = None


class AddressRange(RequestModel):
    minAddress: AddressText
    maxAddress: AddressText


class NetworkSubnetData(RequestModel):
    """Allocate body of ``POST /subnets`` (NetworkSubnetData, 8.4.4.4)."""

    networkResourceName: ShortText | None = None
    networkId: Identifier
    ipVersion: IpVersion
    cidr: AddressText
    gatewayIp: AddressText | None = Field(
        None, description="Absent = the first address of the CIDR; explicit null = no gateway."
    )
    isDhcpEnabled: StrictBool = True
    addressPool: list[AddressRange] | None = Field(None, max_length=64)
    metadata: Metadata | None = None
    resourceGroupId: Identifier | None = None


class NetworkSubnetUpdate(RequestModel):
    networkResourceName: ShortText | None = None
    isDhcpEnabled: StrictBool | None = None
    operationalState: OperationalState | None = None
    metadata: dict[str, str | None] | None = None


class FixedIpData(RequestModel):
    subnetId: Identifier | None = None
    ipAddress: AddressText | None = None


class VirtualNetworkPortData(RequestModel):
    """Allocate body of ``POST /ports`` (VirtualNetworkPortData, 8.4.4.5, plus extensions)."""

    networkResourceName: ShortText | None = None
    networkId: Identifier
    portType: ShortText = Field("ACCESS", description="ACCESS (L2/L3) or TRUNK.")
    segmentId: ShortText | None = Field(None, description="Absent = the network's segmentation id.")
    bandwidth: StrictNumber | None = Field(None, ge=0, le=10_000_000, description="Mbps.")
    macAddress: MacText | None = Field(None, description="Extension; absent = a locally administered MAC.")
    fixedIps: list[FixedIpData] | None = Field(
        None, max_length=16,
        description="Extension: addresses wanted (subnet and/or address). Absent = one address from "
        "the first subnet of each IP version; [] = no address.",
    )
    metadata: Metadata | None = None
    resourceGroupId: Identifier | None = None
    affinityOrAntiAffinityConstraints: Constraints = Field(default_factory=list)


class VirtualNetworkPortUpdate(RequestModel):
    networkResourceName: ShortText | None = None
    bandwidth: StrictNumber | None = Field(None, ge=0, le=10_000_000)
    operationalState: OperationalState | None = None
    metadata: dict[str, str | None] | None = None


class TerminateRequest(RequestModel):
    networkResourceId: list[Identifier] = Field(min_length=1, max_length=1000)


class TerminateResult(BaseModel):
    networkResourceId: list[str]


# ------------------------------------------------------------------ responses


class VirtualNetwork(BaseModel):
    networkResourceId: str
    networkResourceName: str | None = None
    subnetId: list[str] = Field(default_factory=list)
    bandwidth: float = 0
    networkType: str
    segmentationId: str | None = None
    providerNetwork: str | None = None
    networkQoS: list[NetworkQoS] = Field(default_factory=list)
    isShared: bool
    sharingCriteria: str | None = None
    zoneId: str | None = None
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    mtu: int | None = Field(None, description="Extension.")
    resourceGroupId: str = Field(description="Extension: owning resource group.")
    provisioningState: ProvisioningState = Field(description="Extension (rest-binding §1.5).")
    error: dict[str, Any] | None = Field(None, description="Extension: problem details when FAILED.")
    affinityOrAntiAffinityConstraints: list[dict[str, Any]] = Field(
        default_factory=list, description="Extension: the constraints it was allocated with.")


class NetworkSubnet(BaseModel):
    resourceId: str
    networkResourceName: str | None = None
    networkId: str
    ipVersion: IpVersion
    gatewayIp: str | None = None
    cidr: str
    isDhcpEnabled: bool
    addressPool: list[AddressRange] = Field(default_factory=list)
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str
    provisioningState: ProvisioningState
    error: dict[str, Any] | None = None


class FixedIp(BaseModel):
    subnetId: str
    ipAddress: str


class VirtualNetworkPort(BaseModel):
    resourceId: str
    networkResourceName: str | None = None
    networkId: str
    attachedResourceId: str | None = None
    portType: str
    segmentId: str | None = None
    bandwidth: float | None = None
    operationalState: OperationalState
    metadata: dict[str, str] = Field(default_factory=dict)
    macAddress: str = Field(description="Extension.")
    fixedIps: list[FixedIp] = Field(default_factory=list, description="Extension.")
    resourceGroupId: str
    provisioningState: ProvisioningState
    error: dict[str, Any] | None = None
    affinityOrAntiAffinityConstraints: list[dict[str, Any]] = Field(
        default_factory=list, description="Extension: the constraints it was allocated with.")


class VirtualNetworkResourceInformation(BaseModel):
    """8.3.5, plus the provider network's extensions."""

    networkResourceTypeId: str
    bandwidth: float | None = None
    networkType: str
    networkQoS: list[NetworkQoS] = Field(default_factory=list)
    physicalNetwork: str | None = Field(None, description="Extension.")
    mtu: int = Field(description="Extension.")
    zoneIds: list[str] = Field(default_factory=list, description="Extension: empty = every zone.")
    segmentationRanges: list[list[int]] = Field(default_factory=list, description="Extension.")


class NetworkAffinityGroupCreate(RequestModel):
    """Create Network Resource Affinity Or Anti-Affinity Constraints Group (7.4.1.6)."""

    groupName: ShortText
    type: AffinityType
    scope: NetworkAffinityScope = NetworkAffinityScope.NFVI_NODE
    enforcement: Enforcement = Field(Enforcement.HARD, description="Extension: SOFT makes the group best effort.")
    metadata: Metadata | None = None


class NetworkAffinityGroup(BaseModel):
    groupId: str
    groupName: str
    type: AffinityType
    scope: NetworkAffinityScope
    enforcement: Enforcement = Enforcement.HARD
    metadata: dict[str, str] = Field(default_factory=dict)
    resourceGroupId: str

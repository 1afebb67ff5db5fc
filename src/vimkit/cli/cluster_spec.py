"""The cluster description (YAML) of ``vimkit cluster`` and the names and metadata that tie the
VIM's resources to it.

Every resource of a cluster carries ``vimkit.cluster=<name>`` plus a key saying which part of
the description it realises (``vimkit.network``, ``vimkit.subnet``, ``vimkit.node``,
``vimkit.volume``, ``vimkit.pool``). That metadata is the only record of the cluster: the VIM is
queried for it each time, so a half-finished run can be completed by running it again and no
local state can go stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

CLUSTER = "vimkit.cluster"
POOL = "vimkit.pool"
NODE = "vimkit.node"
VOLUME = "vimkit.volume"
NETWORK = "vimkit.network"
SUBNET = "vimkit.subnet"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VolumeSpec(Spec):
    sizeGb: int = Field(ge=1, le=1_048_576)
    type: str = "volume"


class SubnetSpec(Spec):
    name: Name
    cidr: str
    ipVersion: str | None = None
    gateway: str | None = None


class NetworkSpec(Spec):
    name: Name
    type: str | None = Field(None, description="vlan, vxlan or flat; absent: the VIM's default.")
    providerNetwork: str | None = None
    subnets: list[SubnetSpec] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class PoolSpec(Spec):
    name: Name
    flavour: str
    count: int = Field(ge=0, le=10_000)
    image: str | None = None
    userData: str | None = None
    volumes: list[VolumeSpec] = Field(default_factory=list, max_length=8)
    networks: list[str] | None = Field(None, description="Names of the cluster's networks; absent: all of them.")
    antiAffinity: bool = Field(False, description="No two nodes of the pool on one host (a compute affinity group).")
    zone: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class MonitoringSpec(Spec):
    pmJob: bool = True
    collectionPeriod: int = 60
    reportingPeriod: int = 300
    metricGroups: list[str] = Field(default_factory=lambda: ["VirtualisedComputeResource"])


class NotificationSpec(Spec):
    callbackUri: str
    userName: str | None = None
    password: str | None = None


class ClusterSpec(Spec):
    name: Name
    zone: str | None = None
    networks: list[NetworkSpec] = Field(default_factory=list)
    nodePools: list[PoolSpec] = Field(min_length=1)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    notifications: NotificationSpec | None = None

    @model_validator(mode="after")
    def _references(self) -> ClusterSpec:
        networks = [network.name for network in self.networks]
        if len(set(networks)) != len(networks):
            raise ValueError("network names must be unique")
        pools = [pool.name for pool in self.nodePools]
        if len(set(pools)) != len(pools):
            raise ValueError("node pool names must be unique")
        for pool in self.nodePools:
            for name in pool.networks or []:
                if name not in networks:
                    raise ValueError(f"node pool '{pool.name}' names unknown network '{name}'")
        return self

    def pool(self, name: str) -> PoolSpec:
        for pool in self.nodePools:
            if pool.name == name:
                return pool
        raise KeyError(name)


class SpecError(ValueError):
    pass


def load_spec(path: Path) -> ClusterSpec:
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not YAML: {exc}") from exc
    try:
        return ClusterSpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/".join(str(part) for part in first["loc"]) or "(document)"
        raise SpecError(f"{path}: {where}: {first['msg']}") from exc


# --------------------------------------------------------------------------- desired resources


def node_key(pool: str, index: int) -> str:
    return f"{pool}-{index}"


def node_index(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def base_metadata(spec: ClusterSpec, **extra: str) -> dict[str, str]:
    return {CLUSTER: spec.name, **extra}


def network_body(spec: ClusterSpec, network: NetworkSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"networkResourceName": f"{spec.name}-{network.name}",
                            "metadata": {**network.labels, **base_metadata(spec, **{NETWORK: network.name})}}
    if network.type:
        body["networkType"] = network.type
    if network.providerNetwork:
        body["providerNetwork"] = network.providerNetwork
    return body


def subnet_body(spec: ClusterSpec, network: NetworkSpec, subnet: SubnetSpec, network_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"networkResourceName": f"{spec.name}-{network.name}-{subnet.name}",
                            "networkId": network_id, "cidr": subnet.cidr,
                            "ipVersion": subnet.ipVersion or ("IPv6" if ":" in subnet.cidr else "IPv4"),
                            "metadata": base_metadata(spec, **{SUBNET: f"{network.name}/{subnet.name}"})}
    if subnet.gateway:
        body["gatewayIp"] = subnet.gateway
    return body


def volume_body(spec: ClusterSpec, pool: PoolSpec, index: int, number: int) -> dict[str, Any]:
    volume = pool.volumes[number]
    body: dict[str, Any] = {
        "storageName": f"{spec.name}-{node_key(pool.name, index)}-vol{number}",
        "storageData": {"typeOfStorage": volume.type, "sizeOfStorage": volume.sizeGb},
        "metadata": base_metadata(spec, **{POOL: pool.name, NODE: node_key(pool.name, index), VOLUME: str(number)}),
    }
    zone = pool.zone or spec.zone
    if zone:
        body["locationConstraints"] = {"zoneId": zone}
    return body


def compute_body(spec: ClusterSpec, pool: PoolSpec, index: int, network_ids: dict[str, str],
                 volume_ids: list[str], group_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "computeName": f"{spec.name}-{node_key(pool.name, index)}",
        "computeFlavourId": pool.flavour,
        "metadata": {**pool.labels, **base_metadata(spec, **{POOL: pool.name, NODE: node_key(pool.name, index)})},
    }
    if pool.image:
        body["vcImageId"] = pool.image
    if pool.userData:
        body["userData"] = {"content": pool.userData}
    names = pool.networks if pool.networks is not None else [network.name for network in spec.networks]
    if names:
        body["interfaceData"] = [{"networkId": network_ids[name]} for name in names]
    if volume_ids:
        body["storageIds"] = volume_ids
    if group_id:
        body["affinityOrAntiAffinityConstraints"] = [
            {"type": "ANTI_AFFINITY", "affinityOrAntiAffinityResourceGroupId": group_id}]
    zone = pool.zone or spec.zone
    if zone:
        body["locationConstraints"] = {"zoneId": zone}
    return body


def group_body(spec: ClusterSpec, pool: PoolSpec) -> dict[str, Any]:
    return {"groupName": f"{spec.name}-{pool.name}", "type": "ANTI_AFFINITY", "scope": "NFVI_NODE",
            "metadata": base_metadata(spec, **{POOL: pool.name})}


def pm_filter(name: str) -> str:
    return f"(eq,metadata/{CLUSTER},{name})"

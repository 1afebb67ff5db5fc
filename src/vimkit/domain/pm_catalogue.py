"""The measurement catalogue: every name performance management offers, in one place.

The names are a contract (rest-binding.md §8, pm-measurements.md §1.1). The unit, group, object
type and collection method of each are pm-measurements.md's recollection of IFA 027 and are
marked provisional there; they live here only, so a later correction is a one-line change.

Network measurements belong to the compute whose vNIC they count: ``objectType`` VirtualCompute,
``subObjectInstanceId`` the port id (pm-measurements.md §3.1, the first of its two options). The
groups of the network and storage measurements are not named by the sources; ours are
provisional and documented as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vimkit.drivers.model import MEASUREMENT_SOURCES, MetricName

COMPUTE = "VirtualCompute"
STORAGE = "VirtualStorage"
OBJECT_TYPES = (COMPUTE, STORAGE)

COMPUTE_GROUP = "VirtualisedComputeResource"
NETWORK_GROUP = "VirtualisedNetworkInterface"  # provisional name
STORAGE_GROUP = "VirtualisedStorageResource"  # provisional name

MEAN, PEAK, DELTA = "mean", "max", "delta"


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    object_type: str
    group: str
    unit: str
    method: str  # MEAN / PEAK of gauge samples, DELTA of a cumulative counter
    source: MetricName
    sub_object_type: str | None
    prometheus_name: str
    description: str

    @property
    def collection_method(self) -> str:
        """The 3GPP/IFA 027 term: status inspection for sampled values, cumulative counter."""
        return "CC" if self.method == DELTA else "SI"


def _m(name: str, object_type: str, group: str, unit: str, snake: str, description: str,
       sub_object_type: str | None = None) -> Measurement:
    source, method = MEASUREMENT_SOURCES[name]
    return Measurement(name, object_type, group, unit, method, source, sub_object_type, f"vimkit_pm_{snake}",
                       description)


_PERCENT = "percent"
CATALOGUE: Mapping[str, Measurement] = {m.name: m for m in (
    _m("VCpuUsageMean", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_cpu_usage_mean",
       "Mean vCPU utilisation of the compute over the collection period."),
    _m("VCpuUsagePeak", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_cpu_usage_peak",
       "Highest vCPU utilisation sample of the compute in the collection period."),
    _m("VMemoryUsageMean", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_memory_usage_mean",
       "Mean share of the compute's memory in use over the collection period."),
    _m("VMemoryUsagePeak", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_memory_usage_peak",
       "Highest share of the compute's memory in use in the collection period."),
    _m("VDiskUsageMean", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_disk_usage_mean",
       "Mean share of the compute's root disk in use over the collection period."),
    _m("VDiskUsagePeak", COMPUTE, COMPUTE_GROUP, _PERCENT, "v_disk_usage_peak",
       "Highest share of the compute's root disk in use in the collection period."),
    _m("VNetByteIncoming", COMPUTE, NETWORK_GROUP, "bytes", "v_net_byte_incoming",
       "Bytes received by the vNIC during the collection period.", "VirtualNetworkInterface"),
    _m("VNetByteOutgoing", COMPUTE, NETWORK_GROUP, "bytes", "v_net_byte_outgoing",
       "Bytes sent by the vNIC during the collection period.", "VirtualNetworkInterface"),
    _m("VNetPacketIncoming", COMPUTE, NETWORK_GROUP, "packets", "v_net_packet_incoming",
       "Packets received by the vNIC during the collection period.", "VirtualNetworkInterface"),
    _m("VNetPacketOutgoing", COMPUTE, NETWORK_GROUP, "packets", "v_net_packet_outgoing",
       "Packets sent by the vNIC during the collection period.", "VirtualNetworkInterface"),
    _m("UsageMeanVStorage", STORAGE, STORAGE_GROUP, _PERCENT, "usage_mean_vstorage",
       "Mean share of the volume's capacity in use over the collection period."),
    _m("UsagePeakVStorage", STORAGE, STORAGE_GROUP, _PERCENT, "usage_peak_vstorage",
       "Highest share of the volume's capacity in use in the collection period."),
)}

GROUPS: Mapping[str, tuple[str, ...]] = {
    group: tuple(m.name for m in CATALOGUE.values() if m.group == group)
    for group in (COMPUTE_GROUP, NETWORK_GROUP, STORAGE_GROUP)
}

COUNTER_METRICS = frozenset(m.source for m in CATALOGUE.values() if m.method == DELTA)


def measurements_of(object_type: str) -> tuple[str, ...]:
    return tuple(name for name, m in CATALOGUE.items() if m.object_type == object_type)


def resolve_metrics(object_type: str, metrics: list[str] | None, groups: list[str] | None
                    ) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """The measurements a job or threshold asks for, expanded and de-duplicated in catalogue
    order, and the problems as (field, reason) pairs."""
    problems: list[tuple[str, str]] = []
    wanted: set[str] = set()
    for index, name in enumerate(metrics or ()):
        measurement = CATALOGUE.get(name)
        if measurement is None:
            problems.append((f"performanceMetric/{index}", f"unknown measurement '{name}'"))
        elif measurement.object_type != object_type:
            problems.append((f"performanceMetric/{index}",
                             f"'{name}' measures {measurement.object_type}, not {object_type}"))
        else:
            wanted.add(name)
    for index, group in enumerate(groups or ()):
        members = GROUPS.get(group)
        if members is None:
            problems.append((f"performanceMetricGroup/{index}", f"unknown measurement group '{group}'"))
        elif CATALOGUE[members[0]].object_type != object_type:
            problems.append((f"performanceMetricGroup/{index}",
                             f"'{group}' measures {CATALOGUE[members[0]].object_type}, not {object_type}"))
        else:
            wanted.update(members)
    return tuple(name for name in CATALOGUE if name in wanted), problems


def catalogue_document() -> list[dict[str, object]]:
    """``GET /performance/v1/metrics_catalogue``."""
    return [
        {
            "performanceMetric": m.name,
            "performanceMetricGroup": m.group,
            "objectType": m.object_type,
            **({"subObjectType": m.sub_object_type} if m.sub_object_type else {}),
            "unit": m.unit,
            "collectionMethod": m.collection_method,
            "aggregation": m.method,
            "prometheusName": m.prometheus_name,
            "description": m.description,
        }
        for m in CATALOGUE.values()
    ]

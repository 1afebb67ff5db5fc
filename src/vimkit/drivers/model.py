"""Driver vocabulary: error codes, object states, event and fault kinds, metric names.

Kept apart from the protocol so that every backend and the VIM's mapping code (ProblemDetails
causes, alarm types, the PM catalogue) share one set of names.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

# --------------------------------------------------------------------------- errors


class DriverErrorCode(str, Enum):
    """What went wrong, in terms the VIM maps to ProblemDetails causes."""

    NOT_FOUND = "NOT_FOUND"                    # the backend has no such object
    CONFLICT = "CONFLICT"                      # the object's state does not allow the operation
    INVALID_INPUT = "INVALID_INPUT"            # the backend refused the spec
    NO_CAPACITY = "NO_CAPACITY"                # the host or pool is full (backend-side view)
    HOST_UNAVAILABLE = "HOST_UNAVAILABLE"      # the host (hypervisor) is down or unreachable
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"  # the control plane (QMP, Nova API…) cannot be reached
    TIMEOUT = "TIMEOUT"                        # the operation did not finish within its deadline
    UNSUPPORTED = "UNSUPPORTED"                # this backend cannot do it (see Capabilities)
    INTERNAL = "INTERNAL"                      # a bug or an unexpected backend answer


class DriverError(Exception):
    """A failed driver call. ``retryable`` says whether the same call may succeed later unchanged
    (a timeout, a host that comes back) — the VIM retries those with backoff and fails the rest."""

    def __init__(self, code: DriverErrorCode | str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = DriverErrorCode(code)
        self.message = message
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"DriverError({self.code.value}, {self.message!r}, retryable={self.retryable})"


# --------------------------------------------------------------------------- states and kinds


class RunningState(str, Enum):
    """The ``runningState`` extension of VirtualCompute (rest-binding.md §1.5)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
    CRASHED = "CRASHED"


class VolumeState(str, Enum):
    AVAILABLE = "AVAILABLE"
    IN_USE = "IN_USE"
    FAILED = "FAILED"


class LinkState(str, Enum):
    UP = "UP"
    DOWN = "DOWN"


class FaultKind(str, Enum):
    """Faults a test or an operator can inject into simulated infrastructure (admin API)."""

    HOST_DOWN = "HOST_DOWN"
    COMPUTE_CRASH = "COMPUTE_CRASH"
    STORAGE_FAILURE = "STORAGE_FAILURE"
    NETWORK_LINK_DOWN = "NETWORK_LINK_DOWN"
    CPU_LOAD = "CPU_LOAD"


class EventKind(str, Enum):
    COMPUTE_STATE = "COMPUTE_STATE"        # an unrequested running-state change (guest powered off, crash repaired)
    COMPUTE_CRASHED = "COMPUTE_CRASHED"
    HOST_DOWN = "HOST_DOWN"
    HOST_UP = "HOST_UP"
    VOLUME_FAILED = "VOLUME_FAILED"
    VOLUME_RECOVERED = "VOLUME_RECOVERED"
    LINK_DOWN = "LINK_DOWN"
    LINK_UP = "LINK_UP"
    RESYNC = "RESYNC"                      # events were dropped for this subscriber: re-list


class ObjectType(str, Enum):
    """Kinds of objects events and metric samples are about (the PM ``objectType`` values)."""

    HOST = "Host"
    COMPUTE = "VirtualCompute"
    NETWORK = "VirtualNetwork"
    PORT = "VirtualNetworkPort"
    STORAGE = "VirtualStorage"
    STORAGE_POOL = "StoragePool"


class MetricName(str, Enum):
    """Raw metrics a driver samples; the PM module derives the IFA 027 measurements from them
    (see :data:`MEASUREMENT_SOURCES`)."""

    CPU_UTILISATION = "cpu.utilisation"          # % of the compute's vCPUs busy, 0-100
    MEMORY_UTILISATION = "memory.utilisation"    # % of the compute's memory in use, 0-100
    DISK_UTILISATION = "disk.utilisation"        # % of the compute's root disk in use, 0-100
    NET_RX_BYTES = "net.rx.bytes"                # cumulative, per NIC (sub-object = port id)
    NET_TX_BYTES = "net.tx.bytes"
    NET_RX_PACKETS = "net.rx.packets"
    NET_TX_PACKETS = "net.tx.packets"
    STORAGE_UTILISATION = "storage.utilisation"  # % of a volume's capacity in use, 0-100


#: IFA 027 measurement → (raw metric, how a collection period is aggregated:
#: ``mean``/``max`` of the samples, or ``delta`` of a cumulative counter).
MEASUREMENT_SOURCES: Mapping[str, tuple[MetricName, str]] = {
    "VCpuUsageMean": (MetricName.CPU_UTILISATION, "mean"),
    "VCpuUsagePeak": (MetricName.CPU_UTILISATION, "max"),
    "VMemoryUsageMean": (MetricName.MEMORY_UTILISATION, "mean"),
    "VMemoryUsagePeak": (MetricName.MEMORY_UTILISATION, "max"),
    "VDiskUsageMean": (MetricName.DISK_UTILISATION, "mean"),
    "VDiskUsagePeak": (MetricName.DISK_UTILISATION, "max"),
    "VNetByteIncoming": (MetricName.NET_RX_BYTES, "delta"),
    "VNetByteOutgoing": (MetricName.NET_TX_BYTES, "delta"),
    "VNetPacketIncoming": (MetricName.NET_RX_PACKETS, "delta"),
    "VNetPacketOutgoing": (MetricName.NET_TX_PACKETS, "delta"),
    "UsageMeanVStorage": (MetricName.STORAGE_UTILISATION, "mean"),
    "UsagePeakVStorage": (MetricName.STORAGE_UTILISATION, "max"),
}

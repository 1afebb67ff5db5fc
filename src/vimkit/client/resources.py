"""The API surface, written once for both clients.

Each method describes its call (:class:`Call`) and hands it to the client: the sync
:class:`~vimkit.client.Client` returns the value, the :class:`~vimkit.client.AsyncClient` an
awaitable of it; ``list`` returns an iterator (async iterator) that follows ``Link: rel="next"``.
The type annotations are those of the sync client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from vimkit.client._core import Call
from vimkit.client.errors import error_for
from vimkit.client.models import (
    ComputeCapacity,
    Consumer,
    NetworkCapacity,
    Subscription,
    SubscriptionRequest,
)
from vimkit.models.alarms import Alarm
from vimkit.models.compute import (
    ComputeAffinityGroup,
    ComputeOperateResult,
    ComputeTerminateResult,
    VirtualCompute,
    VirtualComputeFlavour,
    VirtualComputeResourceInformation,
)
from vimkit.models.network import (
    NetworkAffinityGroup,
    NetworkSubnet,
    TerminateResult,
    VirtualNetwork,
    VirtualNetworkPort,
    VirtualNetworkResourceInformation,
)
from vimkit.models.performance import (
    MetricsCatalogueEntry,
    PerformanceReport,
    PerformanceReportSummary,
    PmJob,
    Threshold,
)
from vimkit.models.storage import (
    StorageAffinityGroup,
    StorageCapacity,
    StorageOperateResult,
    StorageTerminateResult,
    VirtualStorage,
    VirtualStorageResourceInformation,
)

M = TypeVar("M")
Body = Any  # a request model of vimkit.models, or the equivalent dict

# Resources whose realisation takes time: ready when ALLOCATED, failed when FAILED.
READY_STATES = ("ALLOCATED",)


def list_params(filter: str | None, fields: str | None, exclude_fields: str | None, all_fields: bool,
                exclude_default: bool, sort: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"filter": filter, "fields": fields, "exclude_fields": exclude_fields, "sort": sort}
    if all_fields:
        params["all_fields"] = ""
    if exclude_default:
        params["exclude_default"] = ""
    params.update(extra or {})
    return params


class _Api:
    def __init__(self, client: Any) -> None:
        self._client = client

    def _do(self, call: Call) -> Any:
        return self._client._execute(call)

    def _pages(self, call: Call) -> Any:
        return self._client._paginate(call)


class Collection(_Api, Generic[M]):
    """A collection with POST (create), GET (list / one), PATCH and DELETE."""

    path: str = ""
    model: type = dict
    created_model: type | None = None

    def list(self, filter: str | None = None, *, fields: str | None = None, exclude_fields: str | None = None,
             all_fields: bool = False, exclude_default: bool = False, sort: str | None = None,
             **params: Any) -> Iterator[M]:
        """Every item matching the SOL 013 ``filter``, page after page."""
        return self._pages(Call("GET", self.path, list_params(filter, fields, exclude_fields, all_fields,
                                                              exclude_default, sort, params), model=self.model))

    def get(self, resource_id: str) -> M:
        return self._do(Call("GET", f"{self.path}/{resource_id}", model=self.model))

    def create(self, body: Body, *, wait: float | None = None, idempotency_key: str | None = None) -> M:
        """Allocate / create. With ``wait`` the VIM answers when the work is done (``Prefer: wait``)."""
        return self._do(Call("POST", self.path, body=body, model=self.created_model or self.model, wait=wait,
                             idempotency_key=idempotency_key))

    def update(self, resource_id: str, patch: Body, *, if_match: str | None = None,
               wait: float | None = None) -> M:
        """Merge patch (RFC 7396): a member set to None is removed."""
        return self._do(Call("PATCH", f"{self.path}/{resource_id}", body=patch, model=self.model,
                             if_match=if_match, merge_patch=True, wait=wait))

    def delete(self, resource_id: str, *, wait: float | None = None, if_match: str | None = None) -> M | None:
        """Terminate / delete: the resource while it is terminating, or None once gone."""
        return self._do(Call("DELETE", f"{self.path}/{resource_id}", model=self.model, wait=wait,
                             if_match=if_match))

    def wait_ready(self, resource_id: str, timeout: float = 120.0, interval: float = 0.2) -> M:
        """Poll until the resource is ALLOCATED (and no task is running); a FAILED one raises its error."""
        return self._client.wait_until(lambda: self.get(resource_id), settled, timeout=timeout, interval=interval)

    def wait_gone(self, resource_id: str, timeout: float = 120.0, interval: float = 0.2) -> None:
        return self._client.wait_until(lambda: self.get(resource_id), lambda value: value is None,
                                       timeout=timeout, interval=interval)


def settled(resource: Any) -> bool:
    """True once a resource is ALLOCATED; raises the resource's own problem when it FAILED."""
    if resource is None:
        raise error_for(404, {"status": 404, "cause": "NOT_FOUND", "detail": "the resource disappeared"})
    state = getattr(resource, "provisioningState", None)
    state = getattr(state, "value", state)
    if state == "FAILED":
        error = getattr(resource, "error", None)
        problem = error.model_dump() if hasattr(error, "model_dump") else dict(error or {})
        problem.setdefault("cause", "INTERNAL")
        problem.setdefault("detail", "the resource failed")
        raise error_for(int(problem.get("status", 500)), problem)
    return state in READY_STATES


class Subscriptions(Collection[Subscription]):
    """``/{api}/v1/subscriptions`` of one API."""

    model = Subscription

    def __init__(self, client: Any, api: str) -> None:
        super().__init__(client)
        self.api = api
        self.path = f"/{api}/v1/subscriptions"

    def create(self, body: SubscriptionRequest | dict[str, Any], *, wait: float | None = None,
               idempotency_key: str | None = None) -> Subscription:
        return super().create(body, idempotency_key=idempotency_key)


class _WithSubscriptions(_Api):
    api = ""

    @property
    def subscriptions(self) -> Subscriptions:
        return Subscriptions(self._client, self.api)


# --------------------------------------------------------------------------- compute


class Computes(Collection[VirtualCompute]):
    path = "/compute/v1/computes"
    model = VirtualCompute

    def allocate(self, body: Body, *, wait: float | None = None, idempotency_key: str | None = None) -> VirtualCompute:
        return self.create(body, wait=wait, idempotency_key=idempotency_key)

    def terminate(self, compute_id: str, *, wait: float | None = None,
                  if_match: str | None = None) -> VirtualCompute | None:
        return self.delete(compute_id, wait=wait, if_match=if_match)

    def operate(self, compute_id: str, operation: str, input_data: dict[str, str] | None = None, *,
                wait: float | None = None, if_match: str | None = None) -> ComputeOperateResult:
        body = {"computeOperation": operation, "computeOperationInputData": input_data or {}}
        return self._do(Call("POST", f"{self.path}/{compute_id}/operate", body=body, model=ComputeOperateResult,
                             wait=wait, if_match=if_match))

    def scale(self, compute_id: str, flavour_id: str, *, wait: float | None = None,
              if_match: str | None = None) -> VirtualCompute:
        return self._do(Call("POST", f"{self.path}/{compute_id}/scale", body={"computeFlavourId": flavour_id},
                             model=VirtualCompute, wait=wait, if_match=if_match))

    def migrate(self, compute_id: str, body: Body | None = None, *, wait: float | None = None,
                if_match: str | None = None) -> VirtualCompute:
        return self._do(Call("POST", f"{self.path}/{compute_id}/migrate", body=body or {}, model=VirtualCompute,
                             wait=wait, if_match=if_match))

    def terminate_many(self, compute_ids: list[str]) -> ComputeTerminateResult:
        """``POST /compute/v1/terminate``: best effort; answers the ids actually terminated."""
        return self._do(Call("POST", "/compute/v1/terminate", body={"computeId": compute_ids},
                             model=ComputeTerminateResult))

    def wait_task(self, compute_id: str, timeout: float = 120.0, interval: float = 0.2) -> VirtualCompute:
        """Poll until no task runs on the compute (it leaves UPDATING / ALLOCATING)."""
        return self._client.wait_until(lambda: self.get(compute_id), settled, timeout=timeout, interval=interval)


class Flavours(Collection[VirtualComputeFlavour]):
    path = "/compute/v1/flavours"
    model = VirtualComputeFlavour


class ComputeAffinityGroups(Collection[ComputeAffinityGroup]):
    path = "/compute/v1/affinity_groups"
    model = ComputeAffinityGroup


class ComputeInfo(_WithSubscriptions):
    api = "compute-info"

    def resource_types(self, zone_id: str | None = None) -> list[VirtualComputeResourceInformation]:
        return self._do(Call("GET", "/compute-info/v1/resource_types", {"zoneId": zone_id},
                             model=list[VirtualComputeResourceInformation]))

    def capacity(self, zone_id: str | None = None, resource_type_id: str | None = None) -> ComputeCapacity:
        """``resource_type_id`` is a flavour: the answer then says how many fit (``availableInstances``)."""
        return self._do(Call("GET", "/compute-info/v1/capacity", {"zoneId": zone_id, "resourceTypeId": resource_type_id},
                             model=ComputeCapacity))

    def resource_zones(self) -> list[dict[str, Any]]:
        return self._do(Call("GET", "/compute-info/v1/resource_zones"))

    def resource_zone(self, zone_id: str) -> dict[str, Any]:
        return self._do(Call("GET", f"/compute-info/v1/resource_zones/{zone_id}"))


# --------------------------------------------------------------------------- network


class _NetworkCollection(Collection[M]):
    def allocate(self, body: Body, *, wait: float | None = None, idempotency_key: str | None = None) -> M:
        return self.create(body, wait=wait, idempotency_key=idempotency_key)

    def terminate_many(self, resource_ids: list[str]) -> TerminateResult:
        """``POST /network/v1/terminate`` (networks, subnets and ports alike), best effort."""
        return self._do(Call("POST", "/network/v1/terminate", body={"networkResourceId": resource_ids},
                             model=TerminateResult))


class Networks(_NetworkCollection[VirtualNetwork]):
    path = "/network/v1/networks"
    model = VirtualNetwork


class Subnets(_NetworkCollection[NetworkSubnet]):
    path = "/network/v1/subnets"
    model = NetworkSubnet


class Ports(_NetworkCollection[VirtualNetworkPort]):
    path = "/network/v1/ports"
    model = VirtualNetworkPort


class NetworkAffinityGroups(Collection[NetworkAffinityGroup]):
    path = "/network/v1/affinity_groups"
    model = NetworkAffinityGroup


class NetworkInfo(_WithSubscriptions):
    api = "network-info"

    def resource_types(self, zone_id: str | None = None) -> list[VirtualNetworkResourceInformation]:
        return self._do(Call("GET", "/network-info/v1/resource_types", {"zoneId": zone_id},
                             model=list[VirtualNetworkResourceInformation]))

    def resource_type(self, type_id: str) -> VirtualNetworkResourceInformation:
        return self._do(Call("GET", f"/network-info/v1/resource_types/{type_id}",
                             model=VirtualNetworkResourceInformation))

    def capacity(self, zone_id: str | None = None, resource_type_id: str | None = None) -> NetworkCapacity:
        return self._do(Call("GET", "/network-info/v1/capacity", {"zoneId": zone_id, "resourceTypeId": resource_type_id},
                             model=NetworkCapacity))


# --------------------------------------------------------------------------- storage


class Storages(Collection[VirtualStorage]):
    path = "/storage/v1/storages"
    model = VirtualStorage

    def allocate(self, body: Body, *, wait: float | None = None, idempotency_key: str | None = None) -> VirtualStorage:
        return self.create(body, wait=wait, idempotency_key=idempotency_key)

    def operate(self, storage_id: str, operation: str, input_data: dict[str, str] | None = None, *,
                wait: float | None = None, if_match: str | None = None) -> StorageOperateResult:
        body = {"storageOperation": operation, "storageOperationInputData": input_data or {}}
        return self._do(Call("POST", f"{self.path}/{storage_id}/operate", body=body, model=StorageOperateResult,
                             wait=wait, if_match=if_match))

    def scale(self, storage_id: str, size_gb: int, *, wait: float | None = None,
              if_match: str | None = None) -> VirtualStorage:
        return self._do(Call("POST", f"{self.path}/{storage_id}/scale", body={"sizeOfStorage": size_gb},
                             model=VirtualStorage, wait=wait, if_match=if_match))

    def migrate(self, storage_id: str, body: Body | None = None, *, wait: float | None = None,
                if_match: str | None = None) -> VirtualStorage:
        return self._do(Call("POST", f"{self.path}/{storage_id}/migrate", body=body or {}, model=VirtualStorage,
                             wait=wait, if_match=if_match))

    def terminate_many(self, storage_ids: list[str]) -> StorageTerminateResult:
        return self._do(Call("POST", "/storage/v1/terminate", body={"storageId": storage_ids},
                             model=StorageTerminateResult))


class StorageAffinityGroups(Collection[StorageAffinityGroup]):
    path = "/storage/v1/affinity_groups"
    model = StorageAffinityGroup


class StorageInfo(_WithSubscriptions):
    api = "storage-info"

    def resource_types(self, zone_id: str | None = None) -> list[VirtualStorageResourceInformation]:
        return self._do(Call("GET", "/storage-info/v1/resource_types", {"zoneId": zone_id},
                             model=list[VirtualStorageResourceInformation]))

    def capacity(self, zone_id: str | None = None, resource_type_id: str | None = None) -> StorageCapacity:
        return self._do(Call("GET", "/storage-info/v1/capacity", {"zoneId": zone_id, "resourceTypeId": resource_type_id},
                             model=StorageCapacity))


# --------------------------------------------------------------------------- faults, performance, admin


class Alarms(Collection[Alarm]):
    path = "/faults/v1/alarms"
    model = Alarm

    def acknowledge(self, alarm_id: str, acknowledged: bool = True, *, if_match: str | None = None) -> Alarm:
        state = "ACKNOWLEDGED" if acknowledged else "UNACKNOWLEDGED"
        return self.update(alarm_id, {"ackState": state}, if_match=if_match)


class PmJobs(Collection[PmJob]):
    path = "/performance/v1/pm_jobs"
    model = PmJob

    def reports(self, pm_job_id: str, filter: str | None = None) -> Iterator[PerformanceReportSummary]:
        return self._pages(Call("GET", f"{self.path}/{pm_job_id}/reports", {"filter": filter},
                                model=PerformanceReportSummary))

    def report(self, pm_job_id: str, report_id: str) -> PerformanceReport:
        return self._do(Call("GET", f"{self.path}/{pm_job_id}/reports/{report_id}", model=PerformanceReport))


class Thresholds(Collection[Threshold]):
    path = "/performance/v1/thresholds"
    model = Threshold


class Performance(_WithSubscriptions):
    api = "performance"

    def metrics_catalogue(self) -> list[MetricsCatalogueEntry]:
        return self._do(Call("GET", "/performance/v1/metrics_catalogue", model=list[MetricsCatalogueEntry]))


class Faults(_WithSubscriptions):
    api = "faults"


class Consumers(Collection[Consumer]):
    """Operator API (admin scope). The secret is in the answers of ``create`` and ``rotate_secret`` only."""

    path = "/admin/v1/consumers"
    model = Consumer

    def rotate_secret(self, consumer_id: str) -> Consumer:
        return self._do(Call("POST", f"{self.path}/{consumer_id}/rotate_secret", model=Consumer))


class Images(Collection[dict]):
    """Operator API (admin scope): the software image registry (docs/images.md). ``create``
    registers files already on the VIM's host: ``{"name", "kind", "directory" | "kernelPath" +
    "initrdPath" | "diskPath", …}``."""

    path = "/admin/v1/images"


class Admin(_Api):
    @property
    def consumers(self) -> Consumers:
        return Consumers(self._client)

    @property
    def images(self) -> Images:
        return Images(self._client)

    def hosts(self) -> list[dict[str, Any]]:
        return self._do(Call("GET", "/admin/v1/hosts"))

    def set_host_state(self, host_id: str, admin_state: str) -> dict[str, Any]:
        return self._do(Call("PATCH", f"/admin/v1/hosts/{host_id}", body={"adminState": admin_state}, merge_patch=True))

    def zones(self) -> list[dict[str, Any]]:
        return self._do(Call("GET", "/admin/v1/zones"))

    def inject_fault(self, kind: str, target_id: str, **extra: Any) -> dict[str, Any]:
        return self._do(Call("POST", "/admin/v1/faults", body={"kind": kind, "targetId": target_id, **extra}))

    def repair_fault(self, fault_id: str) -> None:
        return self._do(Call("DELETE", f"/admin/v1/faults/{fault_id}"))


SUBSCRIBABLE_APIS = ("compute", "network", "storage", "compute-info", "network-info", "storage-info",
                     "faults", "performance")


class ResourcesMixin:
    """Attributes of both clients: one object per collection or API."""

    def _bind(self) -> None:
        self.computes = Computes(self)
        self.flavours = Flavours(self)
        self.compute_affinity_groups = ComputeAffinityGroups(self)
        self.compute_info = ComputeInfo(self)
        self.networks = Networks(self)
        self.subnets = Subnets(self)
        self.ports = Ports(self)
        self.network_affinity_groups = NetworkAffinityGroups(self)
        self.network_info = NetworkInfo(self)
        self.storages = Storages(self)
        self.storage_affinity_groups = StorageAffinityGroups(self)
        self.storage_info = StorageInfo(self)
        self.alarms = Alarms(self)
        self.faults = Faults(self)
        self.pm_jobs = PmJobs(self)
        self.thresholds = Thresholds(self)
        self.performance = Performance(self)
        self.admin = Admin(self)

    def subscriptions(self, api: str) -> Subscriptions:
        """The subscriptions of one API root (``compute``, ``faults``, ``storage-info`` …)."""
        if api not in SUBSCRIBABLE_APIS:
            raise ValueError(f"no subscriptions on '{api}': one of {', '.join(SUBSCRIBABLE_APIS)}")
        return Subscriptions(self, api)

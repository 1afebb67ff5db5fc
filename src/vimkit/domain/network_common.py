"""Shared machinery of the network service: schemas, notifications, the allocation steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vimkit.api.problems import ApiError, Cause, conflict, not_found, problem_body
from vimkit.auth.principal import Principal
from vimkit.domain.infrastructure import driver_error
from vimkit.drivers.base import DriverError
from vimkit.infra.inventory import ProviderNetwork
from vimkit.models.network import (
    NetworkAffinityGroup,
    NetworkSubnet,
    VirtualNetwork,
    VirtualNetworkPort,
)
from vimkit.notify.outbox import information_change, resource_change
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.models import DocumentMixin
from vimkit.store.network_tables import (
    IpAllocationRow,
    NetworkAffinityGroupRow,
    NetworkAffinityMemberRow,
    NetworkRow,
    NetworkSegmentRow,
    PortRow,
    SubnetRow,
)
from vimkit.store.repository import (
    Page,
    PageRequest,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
    read_document,
)

log = logging.getLogger("vimkit.network")
Row = TypeVar("Row", NetworkRow, SubnetRow, PortRow)
MAX_ATTEMPTS = 40
TYPE_PREFERENCE = ("vxlan", "vlan", "flat")

NETWORK_SCHEMA = FilterSchema.from_model(
    VirtualNetwork, NetworkRow.body, columns={"networkResourceId": NetworkRow.id, "isShared": NetworkRow.is_shared}
)
SUBNET_SCHEMA = FilterSchema.from_model(
    NetworkSubnet, SubnetRow.body, columns={"resourceId": SubnetRow.id, "networkId": SubnetRow.network_id}
)
PORT_SCHEMA = FilterSchema.from_model(
    VirtualNetworkPort,
    PortRow.body,
    columns={"resourceId": PortRow.id, "networkId": PortRow.network_id, "macAddress": PortRow.mac},
)

AFFINITY_GROUP_SCHEMA = FilterSchema.from_model(
    NetworkAffinityGroup, NetworkAffinityGroupRow.body, columns={"groupId": NetworkAffinityGroupRow.id}
)

KIND = {NetworkRow: ("network", "NETWORK"), SubnetRow: ("subnet", "SUBNET"), PortRow: ("port", "PORT"),
         NetworkAffinityGroupRow: ("network affinity group", "GROUP")}


def bump(row: DocumentMixin, body: dict[str, Any]) -> None:
    row.body = body  # a new dict: SQLAlchemy sees the change
    row.version += 1
    row.updated_at = utcnow()


def reference_not_found(kind: str, name: str, resource_id: str) -> ApiError:
    return ApiError(404, f"{kind} '{resource_id}' does not exist", invalid_params=[(name, "does not exist")])


class NetworkBase:
    """State and steps shared by networks, subnets, ports, information and affinity groups."""

    def __init__(self, database: Database, infrastructure: Any) -> None:
        self.database = database
        self.infra = infrastructure

    @property
    def vim_id(self) -> str:
        return str(self.infra.vim_id)

    @property
    def providers(self) -> list[ProviderNetwork]:
        return list(self.infra.inventory.providerNetworks)

    # ------------------------------------------------------------------ common

    def _group(self, principal: Principal, requested: str | None) -> str:
        if requested is None or requested == principal.resource_group_id:
            return principal.resource_group_id
        if principal.is_admin:
            return requested
        raise ApiError(403, "resourceGroupId must be the consumer's own resource group", cause=Cause.FORBIDDEN,
                       invalid_params=[("resourceGroupId", "not the consumer's resource group")])

    def _with_retry(self, attempt: Callable[[], Any]) -> Any:
        """Run a write transaction again when a unique constraint refused a concurrent duplicate."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except IntegrityError:
                continue
        raise ApiError(503, "too much contention on network allocations; try again", headers={"Retry-After": "1"},
                       cause=Cause.BACKEND_UNAVAILABLE)

    def _announce(self, session: Session, row: DocumentMixin, resource_type: str, change_type: str,
                  body: dict[str, Any] | None = None) -> None:
        body = body if body is not None else row.body
        shared = bool(getattr(row, "is_shared", False))
        resource_change(
            session,
            api="network",
            resource_type=resource_type,
            resource_id=row.id,
            change_type=change_type,
            resource_group_id=row.resource_group_id,
            vim_id=self.vim_id,
            changed_resource_data=body,
            metadata=body.get("metadata") or {},
            audience=None if shared else [row.resource_group_id],
        )

    def _announce_capacity(self, session: Session, provider_id: str) -> None:
        provider = next((p for p in self.providers if p.providerNetworkId == provider_id), None)
        if provider is None:
            return
        information_change(
            session,
            api="network-info",
            resource_type_id=provider_id,
            change_type="UPDATE",
            vim_id=self.vim_id,
            changed_resource_data={"capacity": self._segment_capacity(session, provider)},
            audience=None,
        )

    def get(self, model: type[Row], principal: Principal, resource_id: str) -> Row:
        row = read_document(self.database, model, resource_id, visibility_of(principal))
        if row is None:
            raise not_found(KIND[model][0], resource_id)
        return row

    def list(self, model: type[Row], principal: Principal, page: PageRequest,
             where: ColumnElement[bool] | None) -> Page[Any]:  # plain rows
        with self.database.read() as session:
            return list_documents(session, model, visibility_of(principal), page, where, plain=True)

    def _finish(self, model: type[Row], resource_id: str, provider_id: str | None = None) -> Row:
        with self.database.write() as session:
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                raise not_found(KIND[model][0], resource_id)
            row.state = "ALLOCATED"
            bump(row, {**row.body, "provisioningState": "ALLOCATED"})
            self._announce(session, row, KIND[model][1], "ADDED")
            if provider_id is not None:
                session.flush()
                self._announce_capacity(session, provider_id)
        return row

    @staticmethod
    def _lock_parent(session: Session, model: type[Row], resource_id: str) -> None:
        """Lock a subnet's network before the subnet: the order allocation uses (no deadlock)."""
        if model is SubnetRow:
            network_id = session.scalar(select(SubnetRow.network_id).where(SubnetRow.id == resource_id))
            if network_id is not None:
                session.scalar(select(NetworkRow.seq).where(NetworkRow.id == network_id).with_for_update())

    def _release(self, session: Session, row: DocumentMixin) -> None:
        """Delete a resource row and every allocation it holds."""
        if isinstance(row, NetworkRow):
            session.execute(delete(NetworkSegmentRow).where(NetworkSegmentRow.network_id == row.id))
        elif isinstance(row, SubnetRow):
            session.execute(delete(IpAllocationRow).where(IpAllocationRow.subnet_id == row.id))
            network = session.scalar(select(NetworkRow).where(NetworkRow.id == row.network_id).with_for_update())
            if network is not None and row.id in network.body.get("subnetId", []):
                bump(network, {**network.body, "subnetId": [s for s in network.body["subnetId"] if s != row.id]})
        elif isinstance(row, PortRow):
            # Subnet rows are locked in creation order, as port allocation locks them: no deadlock.
            held = session.execute(select(IpAllocationRow.subnet_id, func.count())
                                   .join(SubnetRow, SubnetRow.id == IpAllocationRow.subnet_id)
                                   .where(IpAllocationRow.port_id == row.id, IpAllocationRow.in_pool.is_(True))
                                   .group_by(IpAllocationRow.subnet_id, SubnetRow.seq).order_by(SubnetRow.seq)).all()
            session.execute(delete(IpAllocationRow).where(IpAllocationRow.port_id == row.id))
            for subnet_id, count in held:
                session.execute(update(SubnetRow).where(SubnetRow.id == subnet_id)
                                .values(pool_used=SubnetRow.pool_used - count))
        if isinstance(row, (NetworkRow, PortRow)):
            session.execute(delete(NetworkAffinityMemberRow).where(NetworkAffinityMemberRow.resource_id == row.id))
        session.delete(row)

    def _fail(self, model: type[Row], resource_id: str, error: ApiError) -> None:
        """The driver could not realise it: announce FAILED and leave nothing allocated."""
        with self.database.write() as session:
            self._lock_parent(session, model, resource_id)
            row = session.scalar(select(model).where(model.id == resource_id).with_for_update())
            if row is None:
                return
            body = {**row.body, "provisioningState": "FAILED", "error": problem_body(error)}
            self._announce(session, row, KIND[model][1], "FAILED", body)
            provider_id = row.provider_network_id if isinstance(row, NetworkRow) else None
            self._release(session, row)
            if provider_id is not None:
                session.flush()
                self._announce_capacity(session, provider_id)

    async def _realise(self, model: type[Row], row: Row, call: Callable[[], Any],
                       provider_id: str | None = None) -> Row:
        try:
            await call()
        except DriverError as exc:
            error = driver_error(exc)
            await run_in_threadpool(self._fail, model, row.id, error)
            raise error from exc
        except BaseException:
            await run_in_threadpool(self._fail, model, row.id,
                                    ApiError(500, "allocation interrupted", cause=Cause.INTERNAL))
            raise
        return await run_in_threadpool(self._finish, model, row.id, provider_id)

    def _network_for_update(self, session: Session, principal: Principal, network_id: str,
                            name: str = "networkId") -> NetworkRow:
        network = get_document(session, NetworkRow, network_id, visibility_of(principal), for_update=True)
        if network is None:
            raise reference_not_found("network", name, network_id)
        if network.state != "ALLOCATED":
            raise conflict(f"network '{network_id}' is {network.state}")
        return network

    @staticmethod
    def _check_owner(principal: Principal, row: DocumentMixin, kind: str) -> None:
        if not principal.is_admin and row.resource_group_id != principal.resource_group_id:
            raise ApiError(403, f"{kind} '{row.id}' is shared but belongs to another resource group",
                           cause=Cause.FORBIDDEN)

    def _segment_capacity(self, session: Session, provider: ProviderNetwork) -> dict[str, Any]:
        pid = provider.providerNetworkId
        ranges: list[dict[str, Any]] = []
        if provider.networkType.value == "flat":
            used = session.scalar(select(func.count()).select_from(NetworkSegmentRow)
                                  .where(NetworkSegmentRow.provider_network_id == pid)) or 0
            ranges.append({"first": None, "last": None, "total": 1, "allocated": used, "available": 1 - used})
        for first, last in provider.segmentationRanges:
            used = session.scalar(select(func.count()).select_from(NetworkSegmentRow).where(
                NetworkSegmentRow.provider_network_id == pid,
                NetworkSegmentRow.segmentation_id.between(first, last))) or 0
            total = last - first + 1
            ranges.append({"first": first, "last": last, "total": total, "allocated": used, "available": total - used})
        return {
            "resourceTypeId": pid,
            "networkType": provider.networkType.value,
            "total": sum(r["total"] for r in ranges),
            "allocated": sum(r["allocated"] for r in ranges),
            "available": sum(r["available"] for r in ranges),
            "ranges": ranges,
        }

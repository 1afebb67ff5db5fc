"""Port allocation, grouped into shared transactions.

A port needs a MAC, addresses from its subnets' pools and a driver call, and ports come in bursts
(every node of a cluster gets its NICs at once). The cost of a port was its two write
transactions — BEGIN, ORM flushes, commit, and on SQLite the process-wide write lock every writer
queues on — not the work inside them. So ports share transactions: one writer task per event loop
runs a single write transaction for everything waiting, in which it

1. settles the ports whose driver calls came back: ``ALLOCATED`` and an ADDED notification, or,
   on a driver failure, the port and everything it held released and a FAILED notification; and
2. reserves the ports requested since its last transaction: validates each, picks its MAC and
   addresses, and inserts it ``ALLOCATING`` with its allocation rows;

then starts the driver calls of the ports it reserved, concurrently. A lone request is served
at once (its reservation is a transaction of one); under load a transaction carries tens of
ports, and each request still gets its own answer, error included. Statements are SQL Core,
one per table and transaction (``executemany``), not ORM flushes.

Uniqueness stays the database's. The subnets in use are locked (``FOR UPDATE``; SQLite
serialises writers) and carry their own counters (``pool_used``, ``pool_cursor``), so picking
an address is one indexed lookup of a few candidates from the cursor, and an exhausted pool is
known without counting (:mod:`.network_addresses`). ``ip_allocations`` (subnet, address) and ``ports.mac`` stay unique; a
concurrent writer of another process that got there first makes the transaction fail, and the
whole transaction is tried again with fresh picks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vimkit.api.problems import ApiError, Cause, conflict, invalid, problem_body
from vimkit.auth.principal import Principal
from vimkit.domain import ipam
from vimkit.domain.infrastructure import driver_error
from vimkit.domain.network_addresses import (
    AddressRequest,
    Pool,
    check_fixed_addresses,
    grant_addresses,
    pick_addresses,
    wanted_addresses,
)
from vimkit.domain.network_affinity import AffinityGroups, NetworkRule, unsatisfiable
from vimkit.domain.network_common import MAX_ATTEMPTS, reference_not_found
from vimkit.drivers.base import DriverError, FixedIp, PortSpec
from vimkit.models.network import VirtualNetworkPortData
from vimkit.notify.outbox import batched
from vimkit.store.network_tables import IpAllocationRow, NetworkAffinityMemberRow, NetworkRow, PortRow, SubnetRow
from vimkit.store.repository import utcnow

log = logging.getLogger("vimkit.network")

#: Most ports one transaction reserves; the rest wait for the next one (a few ms later).
BATCH = 64
#: Transactions a realised port gets to be recorded in when the database fails, and the pause
#: between them.
SETTLE_ATTEMPTS = 3
SETTLE_RETRY_DELAY = 0.2

_PORTS = PortRow.__table__
_ALLOCATIONS = IpAllocationRow.__table__
_SUBNETS = SubnetRow.__table__
_NETWORKS = NetworkRow.__table__
_MEMBERS = NetworkAffinityMemberRow.__table__


def _many(name: str) -> Any:
    return bindparam(name, expanding=True)


# Built once: building and keying a statement costs more than running it on SQLite.
_LOCK_NETWORKS = (select(_NETWORKS.c.id, _NETWORKS.c.resource_group_id, _NETWORKS.c.is_shared, _NETWORKS.c.state,
                         _NETWORKS.c.provider_network_id, _NETWORKS.c.body)
                  .where(_NETWORKS.c.id.in_(_many("ids"))).order_by(_NETWORKS.c.id).with_for_update(read=True))
_LOCK_SUBNETS = (select(_SUBNETS.c.id, _SUBNETS.c.network_id, _SUBNETS.c.state, _SUBNETS.c.body, _SUBNETS.c.pool_used,
                        _SUBNETS.c.pool_cursor)
                 .where(or_(_SUBNETS.c.network_id.in_(_many("networks")), _SUBNETS.c.id.in_(_many("subnets"))))
                 .order_by(_SUBNETS.c.seq).with_for_update())
_MACS_IN_USE = select(_PORTS.c.mac).where(_PORTS.c.mac.in_(_many("macs")))
_SETTLE = (update(_PORTS).where(_PORTS.c.id == bindparam("b_id"))
           .values(state="ALLOCATED", version=bindparam("b_version"), updated_at=bindparam("b_now"),
                   body=bindparam("b_body", type_=_PORTS.c.body.type)))
_FORGET_ADDRESSES = delete(_ALLOCATIONS).where(_ALLOCATIONS.c.port_id.in_(_many("ids")))
_FORGET_PORTS = delete(_PORTS).where(_PORTS.c.id.in_(_many("ids")))
_FORGET_MEMBERS = delete(_MEMBERS).where(_MEMBERS.c.resource_id.in_(_many("ids")))
_SAVE_COUNTERS = (update(_SUBNETS).where(_SUBNETS.c.id == bindparam("b_id"))
                  .values(pool_used=bindparam("b_used"), pool_cursor=bindparam("b_cursor")))
_RECOUNT = (update(_SUBNETS).where(_SUBNETS.c.id == bindparam("b_id"))
            .values(pool_used=select(func.count()).select_from(_ALLOCATIONS)
                    .where(_ALLOCATIONS.c.subnet_id == _SUBNETS.c.id, _ALLOCATIONS.c.in_pool.is_(True))
                    .scalar_subquery()))
_INSERT_PORTS = insert(_PORTS)
_INSERT_ALLOCATIONS = insert(_ALLOCATIONS)
_INSERT_MEMBERS = insert(_MEMBERS)


@dataclass(eq=False)
class _PortJob(AddressRequest):
    principal: Principal
    group: str
    data: VirtualNetworkPortData
    mac: str | None  # the requested MAC, normalised
    future: asyncio.Future[PortRow]
    # Set by the reservation (reset when the transaction is tried again), with those of
    # AddressRequest.
    port: dict[str, Any] | None = None  # the row as inserted (ALLOCATING)
    rules: list[NetworkRule] = field(default_factory=list)
    provider_id: str = ""
    # Set by the driver call: None = realised.
    failure: ApiError | None = None
    settle_attempts: int = 0
    row: PortRow | None = None  # the answer, once ALLOCATED

    def reset(self) -> None:
        self.error, self.port, self.wanted, self.addresses, self.rules = None, None, [], [], []

    def port_row(self, **changes: Any) -> PortRow:
        assert self.port is not None
        return PortRow(**{**self.port, **changes})

    def resolve(self, row: PortRow | None = None, error: BaseException | None = None) -> None:
        if self.future.done():  # the request went away
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(row)  # type: ignore[arg-type]


class _Interrupted(Exception):
    pass


@dataclass(eq=False)
class _Writer:
    """What waits for the next transaction of one event loop."""

    reserve: list[_PortJob] = field(default_factory=list)
    settle: list[_PortJob] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


def _visible(principal: Principal, owner: str, shared: bool) -> bool:
    return principal.is_admin or shared or owner == principal.resource_group_id


class PortAllocation(AffinityGroups):
    _writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer]

    async def create_port(self, principal: Principal, data: VirtualNetworkPortData) -> PortRow:
        group = self._group(principal, data.resourceGroupId)
        mac = ipam.normalise_mac("macAddress", data.macAddress) if data.macAddress is not None else None
        loop = asyncio.get_running_loop()
        job = _PortJob(principal, group, data, mac, loop.create_future())
        writer = self._writer(loop)
        writer.reserve.append(job)
        self._kick(writer)
        return await job.future

    # ------------------------------------------------------------------ the writer

    def _writer(self, loop: asyncio.AbstractEventLoop) -> _Writer:
        writers = self.__dict__.setdefault("_writers", weakref.WeakKeyDictionary())
        writer = writers.get(loop)
        if writer is None:
            writer = writers[loop] = _Writer()
        return writer

    def _kick(self, writer: _Writer) -> None:
        if writer.task is None:
            writer.task = asyncio.get_running_loop().create_task(self._drain(writer))

    async def _drain(self, writer: _Writer) -> None:
        try:
            while writer.reserve or writer.settle:
                reserve = [job for job in writer.reserve[:BATCH] if not job.future.done()]
                del writer.reserve[:BATCH]
                settle, writer.settle = writer.settle, []
                try:
                    await run_in_threadpool(self._commit_ports, reserve, settle)
                except Exception as exc:
                    # The database failed us. New requests learn it; ports the driver has dealt
                    # with are tried again in the next transactions (they exist in the backend and
                    # are ALLOCATING in the store until then), and failed after that, as after a
                    # crash between the two steps.
                    log.exception("port allocation transaction failed")
                    error = exc if isinstance(exc, ApiError) else ApiError(500, "port allocation failed",
                                                                          cause=Cause.INTERNAL)
                    for job in reserve:
                        job.resolve(error=error)
                    for job in settle:
                        job.settle_attempts += 1
                        if job.settle_attempts < SETTLE_ATTEMPTS:
                            writer.settle.append(job)
                        else:
                            job.resolve(error=error)
                    if writer.settle:
                        await asyncio.sleep(SETTLE_RETRY_DELAY)
                    continue
                for job in settle:
                    if job.failure is None:
                        job.resolve(job.row)
                    else:
                        job.resolve(error=job.failure)
                for job in reserve:
                    if job.error is not None:
                        job.resolve(error=job.error)
                    else:
                        asyncio.get_running_loop().create_task(self._realise_port(writer, job))
        finally:
            writer.task = None

    async def _realise_port(self, writer: _Writer, job: _PortJob) -> None:
        port = job.port
        assert port is not None
        spec = PortSpec(
            port_id=port["id"], network_id=port["network_id"], mac_address=port["mac"],
            fixed_ips=tuple(FixedIp(f["subnetId"], f["ipAddress"]) for f in port["body"]["fixedIps"]),
            metadata=dict(job.data.metadata or {}),
        )
        interrupted = ApiError(500, "allocation interrupted", cause=Cause.INTERNAL)
        try:
            if job.future.done():  # the caller went away before the driver was asked
                raise _Interrupted
            await self.infra.driver.create_port(spec)
        except _Interrupted:
            job.failure = interrupted
        except DriverError as exc:
            job.failure = driver_error(exc)
        except Exception:  # a driver bug must not leave the port half-allocated
            log.exception("create_port %s", spec.port_id)
            job.failure = ApiError(500, "the driver failed to create the port", cause=Cause.INTERNAL)
        else:
            if job.future.done():
                # Nobody waits for this port any more (the caller was cancelled, e.g. a compute
                # allocation being rolled back): undo it rather than leave a port nobody knows.
                job.failure = interrupted
                asyncio.get_running_loop().create_task(self._undo_port(spec.port_id))
        writer.settle.append(job)
        self._kick(writer)

    async def _undo_port(self, port_id: str) -> None:
        try:
            await self.infra.driver.delete_port(port_id)
        except Exception:
            log.warning("could not delete interrupted port %s from the backend", port_id, exc_info=True)

    # ------------------------------------------------------------------ the transaction

    def _commit_ports(self, reserve: list[_PortJob], settle: list[_PortJob]) -> None:
        for _ in range(MAX_ATTEMPTS):
            for job in reserve:
                job.reset()
            try:
                with self.database.write() as session:
                    networks, pools = self._lock_for_ports(session, reserve, settle)
                    self._settle_ports(session, settle, pools)
                    if reserve:
                        self._reserve_ports(session, reserve, networks, pools)
                return
            except IntegrityError:
                continue
        raise ApiError(503, "too much contention on port allocations; try again", headers={"Retry-After": "1"},
                       cause=Cause.BACKEND_UNAVAILABLE)

    @staticmethod
    def _lock_for_ports(session: Session, reserve: list[_PortJob],
                        settle: list[_PortJob]) -> tuple[dict[str, Any], dict[str, Pool]]:
        """Lock what the transaction depends on, networks before subnets (the order every path
        uses): the networks of new ports in share mode (so that they cannot go away meanwhile),
        and every subnet whose counters may change."""
        connection = session.connection()
        network_ids = sorted({job.data.networkId for job in reserve})
        networks: dict[str, Any] = {}
        if network_ids:
            networks = {row.id: row for row in connection.execute(_LOCK_NETWORKS, {"ids": network_ids})}
        released = {pool.id for job in settle if job.failure is not None for pool, _ in job.addresses}
        if not networks and not released:
            return networks, {}
        pools = {row.id: Pool(row.id, row.network_id, row.state, row.body, row.pool_used, row.pool_cursor)
                 for row in connection.execute(_LOCK_SUBNETS, {"networks": list(networks),
                                                                "subnets": sorted(released)})}
        return networks, pools

    def _settle_ports(self, session: Session, jobs: list[_PortJob], pools: dict[str, Pool]) -> None:
        with batched(session):
            self._settle_in(session, jobs, pools)
        self._save_counters(session, pools)

    def _settle_in(self, session: Session, jobs: list[_PortJob], pools: dict[str, Pool]) -> None:
        connection = session.connection()
        done = [job for job in jobs if job.failure is None]
        failed = [job for job in jobs if job.failure is not None]
        now = utcnow()
        if done:
            for job in done:
                assert job.port is not None
                job.row = job.port_row(state="ALLOCATED", updated_at=now, version=2,
                                       body={**job.port["body"], "provisioningState": "ALLOCATED"})
                self._announce(session, job.row, "PORT", "ADDED")
            connection.execute(_SETTLE, [{"b_id": job.row.id, "b_version": job.row.version, "b_now": now,
                                          "b_body": job.row.body} for job in done])  # type: ignore[union-attr]
        if failed:
            ids = [job.port["id"] for job in failed]  # type: ignore[index]
            connection.execute(_FORGET_ADDRESSES, {"ids": ids})
            connection.execute(_FORGET_PORTS, {"ids": ids})
            connection.execute(_FORGET_MEMBERS, {"ids": ids})
            # Latest first: a failure that was the last allocation from a pool gives its address
            # back to the cursor, so a failed request leaves the next one the same address.
            for job in reversed(failed):
                for stale, text in reversed(job.addresses):
                    pool = pools.get(stale.id, stale)
                    pool.used -= 1
                    pool.changed = True
                    plan = pool.get_plan()
                    spot = ipam.position(plan.pools, int(ipam.parse_address("", text)))
                    if (spot + 1) % plan.pool_size() == pool.cursor:
                        pool.cursor = spot
            for job in failed:
                assert job.failure is not None
                row = job.port_row()
                body = {**row.body, "provisioningState": "FAILED", "error": problem_body(job.failure)}
                self._announce(session, row, "PORT", "FAILED", body)

    @staticmethod
    def _save_counters(session: Session, pools: dict[str, Pool]) -> None:
        changed = [pool for pool in pools.values() if pool.changed]
        if changed:
            session.connection().execute(
                _SAVE_COUNTERS, [{"b_id": pool.id, "b_used": pool.used, "b_cursor": pool.cursor} for pool in changed])
            for pool in changed:
                pool.changed = False
        wrong = [pool for pool in pools.values() if pool.recount]
        if wrong:
            session.connection().execute(_RECOUNT, [{"b_id": pool.id} for pool in wrong])
            for pool in wrong:
                pool.recount = False

    def _reserve_ports(self, session: Session, jobs: list[_PortJob], networks: dict[str, Any],
                       pools: dict[str, Pool]) -> None:
        by_network: dict[str, list[Pool]] = {}
        for pool in pools.values():
            if pool.state == "ALLOCATED":
                by_network.setdefault(pool.network_id, []).append(pool)
        requested_macs = [job.mac for job in jobs if job.mac is not None]
        macs_in_use = set(session.connection().execute(_MACS_IN_USE, {"macs": requested_macs}).scalars()) \
            if requested_macs else set()
        joined: dict[str, list[str]] = {}  # group → provider networks of this transaction's ports
        for job in jobs:
            try:
                self._check_port(job, networks.get(job.data.networkId), by_network, macs_in_use)
                if job.data.affinityOrAntiAffinityConstraints:
                    self._check_port_affinity(session, job, joined)
            except ApiError as error:
                job.error = error
        check_fixed_addresses(session, [job for job in jobs if job.error is None])
        accepted = grant_addresses([job for job in jobs if job.error is None])
        accepted = pick_addresses(session, accepted, pools)
        self._insert_ports(session, accepted, networks)
        self._save_counters(session, pools)

    def _check_port(self, job: _PortJob, network: Any, by_network: dict[str, list[Pool]],
                    macs_in_use: set[str]) -> None:
        data = job.data
        if network is None or not _visible(job.principal, network.resource_group_id, network.is_shared):
            raise reference_not_found("network", "networkId", data.networkId)
        if network.state != "ALLOCATED":
            raise conflict(f"network '{network.id}' is {network.state}")
        segment = network.body.get("segmentationId")
        if data.segmentId is not None and data.segmentId != segment:
            raise invalid("segmentId", f"must be the network's segmentation id ({segment})")
        job.provider_id = network.provider_network_id
        if job.mac is not None:
            if job.mac in macs_in_use:
                raise ApiError(409, f"MAC address {job.mac} is in use", cause=Cause.CONFLICT,
                               invalid_params=[("macAddress", "in use")])
            macs_in_use.add(job.mac)  # a second request for it in this transaction
        job.wanted = wanted_addresses(data, by_network.get(network.id, []))

    def _check_port_affinity(self, session: Session, job: _PortJob, joined: dict[str, list[str]]) -> None:
        rules = self._affinity_rules(session, job.principal, job.data.affinityOrAntiAffinityConstraints, for_port=True)
        rules = [NetworkRule(r.index, r.type, r.scope, r.hard, r.group_id, (*r.members, *joined.get(r.group_id, ())))
                 if r.group_id is not None else r for r in rules]
        provider = self._provider(job.provider_id)
        if provider is not None:
            broken = [rule for rule in self._broken(rules, provider) if rule.hard]
            if broken:
                raise unsatisfiable(broken, [provider])
        job.rules = rules
        # Counted for the ports after it in this transaction even if it fails later (address
        # capacity): that can only make a later port of the same group wait, never break a rule.
        for rule in rules:
            if rule.group_id is not None:
                joined.setdefault(rule.group_id, []).append(job.provider_id)

    def _insert_ports(self, session: Session, jobs: list[_PortJob], networks: dict[str, Any]) -> None:
        if not jobs:
            return
        now = utcnow()
        ports, allocations, members = [], [], []
        random_macs: set[str] = set()
        for job in jobs:
            data = job.data
            mac = job.mac
            while mac is None or mac in random_macs:
                mac = ipam.random_mac()
            random_macs.add(mac)
            port_id = str(uuid.uuid4())
            body: dict[str, Any] = {
                "resourceId": port_id,
                "networkId": data.networkId,
                "attachedResourceId": None,
                "portType": data.portType,
                "segmentId": networks[data.networkId].body.get("segmentationId"),
                "operationalState": "ENABLED",
                "metadata": data.metadata or {},
                "macAddress": mac,
                "fixedIps": [{"subnetId": pool.id, "ipAddress": text} for pool, text in job.addresses],
                "resourceGroupId": job.group,
                "provisioningState": "ALLOCATING",
            }
            for optional in ("networkResourceName", "bandwidth"):
                if getattr(data, optional) is not None:
                    body[optional] = getattr(data, optional)
            if data.affinityOrAntiAffinityConstraints:
                body["affinityOrAntiAffinityConstraints"] = [
                    c.model_dump(mode="json", exclude_none=True) for c in data.affinityOrAntiAffinityConstraints]
                members += [{"group_id": group_id, "resource_id": port_id, "resource_type": "PORT",
                             "provider_network_id": job.provider_id}
                            for group_id in dict.fromkeys(r.group_id for r in job.rules if r.group_id is not None)]
            job.port = {"id": port_id, "resource_group_id": job.group, "network_id": data.networkId,
                        "state": "ALLOCATING", "mac": mac, "attached_resource_id": None, "created_at": now,
                        "updated_at": now, "version": 1, "body": body}
            ports.append(job.port)
            allocations += [{"subnet_id": pool.id, "address": text, "port_id": port_id, "in_pool": True}
                            for pool, text in job.addresses]
        session.connection().execute(_INSERT_PORTS, ports)
        if allocations:
            session.connection().execute(_INSERT_ALLOCATIONS, allocations)
        if members:
            session.connection().execute(_INSERT_MEMBERS, members)

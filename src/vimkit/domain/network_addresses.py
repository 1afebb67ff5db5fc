"""Address selection for port allocation: which addresses a request wants, and free ones from
the pools, inside the allocation transaction (see :mod:`.network_ports`).

Each subnet row carries ``pool_used`` (pool addresses held) and ``pool_cursor`` (where the search
for a free address starts), changed only under the subnet's row lock. Capacity is granted from
the counter, in request order, before any address is picked; then one lookup of the candidates
from the cursor on usually finds all the addresses a transaction needs from a pool.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, invalid
from vimkit.domain import ipam
from vimkit.models.network import VirtualNetworkPortData
from vimkit.store.network_tables import IpAllocationRow

log = logging.getLogger("vimkit.network")

#: Candidates looked up at once beyond the number of addresses needed from a pool.
SPARE_CANDIDATES = 4

_ALLOCATIONS = IpAllocationRow.__table__
_HELD = select(_ALLOCATIONS.c.address).where(_ALLOCATIONS.c.subnet_id == bindparam("subnet"),
                                             _ALLOCATIONS.c.address.in_(bindparam("addresses", expanding=True)))


@dataclass(eq=False)
class Pool:
    """A subnet locked by the transaction: its plan, its counters, and what this batch took."""

    id: str
    network_id: str
    state: str
    body: dict[str, Any]
    used: int
    cursor: int
    plan: ipam.SubnetPlan | None = None
    taken: set[str] = field(default_factory=set)  # addresses given in this transaction
    wanted: int = 0  # addresses still to pick from the pool in this transaction
    changed: bool = False
    recount: bool = False  # the counter was found wrong: count the allocations instead

    def get_plan(self) -> ipam.SubnetPlan:
        if self.plan is None:
            self.plan = ipam.plan_from_document(self.body)
        return self.plan

@dataclass(eq=False, kw_only=True)
class AddressRequest:
    """What address selection needs of a port request, and what it fills in."""

    error: ApiError | None = None
    wanted: list[tuple[Pool, ipam.IpAddress | None]] = field(default_factory=list)
    addresses: list[tuple[Pool, str]] = field(default_factory=list)


def wanted_addresses(data: VirtualNetworkPortData,
                     subnets: Sequence[Pool]) -> list[tuple[Pool, ipam.IpAddress | None]]:
    if data.fixedIps is None:
        wanted: list[tuple[Pool, ipam.IpAddress | None]] = []
        for version in ("IPv4", "IPv6"):
            first = next((s for s in subnets if s.body["ipVersion"] == version), None)
            if first is not None:
                wanted.append((first, None))
        return wanted
    by_id = {s.id: s for s in subnets}
    wanted = []
    for index, item in enumerate(data.fixedIps):
        name = f"fixedIps/{index}"
        subnet = None
        if item.subnetId is not None:
            subnet = by_id.get(item.subnetId)
            if subnet is None:
                raise invalid(f"{name}/subnetId", f"'{item.subnetId}' is not a subnet of network '{data.networkId}'")
        if item.ipAddress is None:
            if subnet is None:
                raise invalid(name, "give subnetId, ipAddress or both")
            wanted.append((subnet, None))
            continue
        address = ipam.parse_address(f"{name}/ipAddress", item.ipAddress)
        if subnet is None:
            subnet = next((s for s in subnets if address in s.get_plan().network), None)
            if subnet is None:
                raise invalid(f"{name}/ipAddress", f"{address} is in no subnet of network '{data.networkId}'")
        plan = subnet.get_plan()
        if address.version != plan.version:
            raise invalid(f"{name}/ipAddress", f"{address} is an IPv{address.version} address, subnet "
                                               f"'{subnet.id}' is IPv{plan.version}")
        if address not in plan.network:
            raise invalid(f"{name}/ipAddress", f"{address} is outside {plan.network}")
        if not plan.in_pool(address):
            raise invalid(f"{name}/ipAddress", f"{address} is outside the address pool of subnet '{subnet.id}'")
        wanted.append((subnet, address))
    return wanted

def check_fixed_addresses(session: Session, jobs: list[AddressRequest]) -> None:
    """Requested addresses already held, or requested twice in this transaction: 409."""
    asked: dict[str, set[str]] = {}
    for job in jobs:
        for pool, address in job.wanted:
            if address is not None:
                asked.setdefault(pool.id, set()).add(str(address))
    held = {(pool_id, address) for pool_id, texts in asked.items() for address in session.connection().execute(
        _HELD, {"subnet": pool_id, "addresses": sorted(texts)}).scalars()}
    for job in jobs:
        for index, (pool, address) in enumerate(job.wanted):
            if address is None:
                continue
            text = str(address)
            if (pool.id, text) in held or text in pool.taken:
                # Only fixedIps name addresses, one entry each: the index is the request's.
                job.error = ApiError(409, f"address {text} of subnet '{pool.id}' is in use", cause=Cause.CONFLICT,
                                     invalid_params=[(f"fixedIps/{index}/ipAddress", "in use")])
                break
        else:
            for pool, address in job.wanted:
                if address is not None:
                    pool.taken.add(str(address))

def grant_addresses(jobs: list[AddressRequest]) -> list[AddressRequest]:
    """Give pool capacity to the requests in order; one that cannot have all it asks for gets
    409 NO_CAPACITY and nothing."""
    accepted = []
    for job in jobs:
        if job.error is not None:
            continue
        needs: dict[str, int] = {}
        pools = {}
        for pool, _ in job.wanted:
            needs[pool.id] = needs.get(pool.id, 0) + 1
            pools[pool.id] = pool
        full = next((pools[pool_id] for pool_id, count in needs.items()
                     if pools[pool_id].used + count > pools[pool_id].get_plan().pool_size()), None)
        if full is not None:
            job.error = ipam.no_capacity(f"subnet '{full.id}' has no free address left")
            for pool, address in job.wanted:
                if address is not None:
                    pool.taken.discard(str(address))
            continue
        for pool, address in job.wanted:
            pool.used += 1
            pool.changed = True
            if address is None:
                pool.wanted += 1
        accepted.append(job)
    return accepted

def pick_addresses(session: Session, jobs: list[AddressRequest], pools: dict[str, Pool]) -> list[AddressRequest]:
    """Free pool addresses from each cursor on, as many as were granted, in one lookup per
    pool (usually), given to the requests in order; the requests that got all they asked for."""
    picked: dict[str, list[str]] = {}
    for pool in pools.values():
        if pool.wanted:
            picked[pool.id] = free_addresses(session, pool, pool.wanted)
            pool.wanted = 0
    served = []
    for job in jobs:
        needs = Counter(pool.id for pool, address in job.wanted if address is None)
        short = next((pool_id for pool_id, count in needs.items() if len(picked[pool_id]) < count), None)
        if short is not None:
            # Only when a counter promised room that was not there (see _free_addresses).
            job.error = ipam.no_capacity(f"subnet '{short}' has no free address left")
            for pool, address in job.wanted:
                pool.used -= 1
                if address is not None:
                    pool.taken.discard(str(address))
            continue
        for pool, address in job.wanted:
            job.addresses.append((pool, str(address) if address is not None else picked[pool.id].pop(0)))
        served.append(job)
    return served

def free_addresses(session: Session, pool: Pool, count: int) -> list[str]:
    """Up to ``count`` free addresses from the cursor on. Fewer only if ``pool_used`` said there
    was room and the whole pool shows otherwise (a counter gone wrong, e.g. rows changed by
    hand); the counter is then recounted from the allocations."""
    plan = pool.get_plan()
    size = plan.pool_size()
    found: list[str] = []
    last = None
    for window in ipam.scan_windows(plan.pools, pool.cursor, window=max(64, count + SPARE_CANDIDATES),
                                    first=count + SPARE_CANDIDATES):
        texts = [ipam.to_text(value, plan.version) for value in window]
        held = set(session.connection().execute(_HELD, {"subnet": pool.id, "addresses": texts}).scalars())
        for value, text in zip(window, texts):
            if text not in held and text not in pool.taken:
                found.append(text)
                pool.taken.add(text)
                last = value
                if len(found) == count:
                    break
        if len(found) == count:
            break
    else:
        log.warning("subnet %s: pool_used said %d addresses were free, found %d; recounting",
                    pool.id, count, len(found))
        pool.recount = True
    if last is not None:
        pool.cursor = (ipam.position(plan.pools, last) + 1) % size
    return found

"""Tables of the network API: networks, subnets, ports and the allocations that keep them unique.

Uniqueness is the database's job, not only Python's:

- ``network_segments``: one row per segment in use, unique on (provider network, segmentation
  id); a flat provider network carries one network, recorded with segmentation id 0;
- ``ip_allocations``: one row per address in use, unique on (subnet, address) — port addresses
  and the gateway;
- ``ports.mac``: unique.

Allocation picks a free value inside the write transaction and relies on these constraints;
a concurrent transaction that picked the same value fails with an IntegrityError and is retried.

Each subnet also carries two counters, changed only in transactions that hold its row lock:
``pool_used`` (pool addresses held by ports or the gateway) and ``pool_cursor`` (the pool
position where the search for a free address starts). With them, allocating an address is one
indexed lookup instead of a count and a scan, and an exhausted pool is known without looking.

``network_affinity_members`` records which networks and ports were allocated with a network
affinity group, and where they landed, so that later allocations can honour the group.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin, SeqInteger


class NetworkRow(DocumentMixin, Base):
    __tablename__ = "networks"

    # Repository.Visibility shows shared networks to every resource group.
    is_shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    provider_network_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)


class SubnetRow(DocumentMixin, Base):
    __tablename__ = "subnets"

    network_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    pool_used: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    # A pool position (< the pool size); it only ever advances by allocations, so it fits.
    pool_cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class PortRow(DocumentMixin, Base):
    __tablename__ = "ports"

    network_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    mac: Mapped[str] = mapped_column(String(17), nullable=False, unique=True)
    attached_resource_id: Mapped[str | None] = mapped_column(String(64), index=True)


class NetworkSegmentRow(Base):
    __tablename__ = "network_segments"
    __table_args__ = (
        UniqueConstraint("provider_network_id", "segmentation_id", name="uq_network_segments_provider_segment"),
    )

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    provider_network_id: Mapped[str] = mapped_column(String(64), nullable=False)
    segmentation_id: Mapped[int] = mapped_column(Integer, nullable=False)
    network_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)


class IpAllocationRow(Base):
    __tablename__ = "ip_allocations"
    __table_args__ = (UniqueConstraint("subnet_id", "address", name="uq_ip_allocations_subnet_address"),)

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    subnet_id: Mapped[str] = mapped_column(String(64), nullable=False)
    address: Mapped[str] = mapped_column(String(45), nullable=False)
    # The port holding it; None for the subnet's gateway.
    port_id: Mapped[str | None] = mapped_column(String(64), index=True)
    in_pool: Mapped[bool] = mapped_column(Boolean, nullable=False)


class NetworkAffinityGroupRow(DocumentMixin, Base):
    """A Network Resource Affinity Or Anti-Affinity Constraints Group (IFA 005 7.4.1.6)."""

    __tablename__ = "network_affinity_groups"


class NetworkAffinityMemberRow(Base):
    """A network or port allocated with an affinity group constraint, and where it landed."""

    __tablename__ = "network_affinity_members"
    __table_args__ = (UniqueConstraint("group_id", "resource_id", name="uq_network_affinity_members_group_resource"),)

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    group_id: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    resource_type: Mapped[str] = mapped_column(String(16), nullable=False)  # NETWORK or PORT
    provider_network_id: Mapped[str] = mapped_column(String(64), nullable=False)

"""Tables of the compute API: computes, their snapshots and compute affinity groups.

The columns next to ``body`` repeat the attributes a CCM filters and sorts by most (name, host,
zone, provisioning state) so that a filtered list over 100,000 computes uses an index instead of
reading every JSON document.
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin


class ComputeRow(DocumentMixin, Base):
    """A compute (VirtualCompute); ``body`` is its API representation."""

    __tablename__ = "computes"

    compute_name: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    host_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    zone_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True, nullable=False)


class ComputeSnapshotRow(DocumentMixin, Base):
    """A snapshot (image) taken of a compute with CREATE_SNAPSHOT."""

    __tablename__ = "compute_snapshots"

    compute_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)


class ComputeAffinityGroupRow(DocumentMixin, Base):
    """A producer-managed compute affinity or anti-affinity group."""

    __tablename__ = "compute_affinity_groups"

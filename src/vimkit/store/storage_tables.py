"""Tables of the storage API: volumes, their snapshots and storage affinity groups."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin


class StorageRow(DocumentMixin, Base):
    """A volume (VirtualStorage); ``body`` is its API representation."""

    __tablename__ = "storages"


class StorageSnapshotRow(DocumentMixin, Base):
    """A snapshot of a volume, a possible source of new volumes."""

    __tablename__ = "storage_snapshots"

    volume_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)


class StorageAffinityGroupRow(DocumentMixin, Base):
    """A producer-managed storage affinity or anti-affinity group."""

    __tablename__ = "storage_affinity_groups"

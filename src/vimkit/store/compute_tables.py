"""Tables of the compute API: computes, their snapshots and compute affinity groups.

The columns next to ``body`` repeat the attributes a CCM filters and sorts by most (name, host,
zone, provisioning state) so that a filtered list over 100,000 computes uses an index instead of
reading every JSON document. ``compute_metadata`` indexes the ``metadata`` map the same way
(one row per compute and key, see :mod:`vimkit.store.map_index`), for label selectors such as
``(eq,metadata/vimkit.cluster,c1)``.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.map_index import MapIndex
from vimkit.store.models import Base, DocumentMixin, SeqInteger


class ComputeRow(DocumentMixin, Base):
    """A compute (VirtualCompute); ``body`` is its API representation."""

    __tablename__ = "computes"

    compute_name: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    host_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    zone_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True, nullable=False)


class ComputeMetadataRow(Base):
    """One ``metadata`` entry of a compute, kept equal to ``body["metadata"]`` by every write of the
    body (``vimkit.domain.compute``) and deleted with the compute (``ON DELETE CASCADE``).

    The index holds a digest of the value, not the value: a 1024-character value can exceed
    PostgreSQL's btree entry limit. Lookups compare the digest and the value.

    The foreign key makes SQLite delete these rows when ``computes`` is dropped: a later migration
    that rebuilds ``computes`` with ``batch_alter_table`` (copy, drop, rename) must rebuild them.
    """

    __tablename__ = "compute_metadata"
    __table_args__ = (Index("ix_compute_metadata_lookup", "key", "value_digest", "compute_seq"),)

    compute_seq: Mapped[int] = mapped_column(SeqInteger, ForeignKey("computes.seq", ondelete="CASCADE"),
                                             primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024), nullable=False)
    value_digest: Mapped[str] = mapped_column(String(16), nullable=False)


COMPUTE_METADATA = MapIndex(ComputeMetadataRow.__table__, "compute_seq", ComputeRow.__table__.c.seq,
                            ComputeRow.__table__.c.id)


class ComputeSnapshotRow(DocumentMixin, Base):
    """A snapshot (image) taken of a compute with CREATE_SNAPSHOT."""

    __tablename__ = "compute_snapshots"

    compute_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)


class ComputeAffinityGroupRow(DocumentMixin, Base):
    """A producer-managed compute affinity or anti-affinity group."""

    __tablename__ = "compute_affinity_groups"

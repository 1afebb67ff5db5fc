"""The alarm list (fault management)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin, UtcDateTime


class AlarmRow(DocumentMixin, Base):
    """One alarm; ``body`` is the Alarm information element.

    ``active_key`` (managed object + probable cause) is set while the alarm is active and unique,
    so the database itself guarantees that one fault is one alarm; cleared alarms set it to NULL.
    """

    __tablename__ = "alarms"
    # Alarm lists are filtered by severity far more than by anything else: keep it a column.
    __table_args__ = (Index("ix_alarms_severity_seq", "perceived_severity", "seq"),)

    managed_object_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    probable_cause: Mapped[str] = mapped_column(String(128), nullable=False)
    perceived_severity: Mapped[str] = mapped_column(String(16), nullable=False)
    active_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)

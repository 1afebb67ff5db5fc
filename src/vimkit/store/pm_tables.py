"""Tables of performance management: PM jobs, thresholds and the reports jobs produce.

A report is one row per job and reporting period, never one per sample: its values are stored
compressed and columnar in ``data`` (see ``vimkit.domain.pm_collect.report_series``), and
``body`` holds only the summary a listing shows. ``(pm_job_id, period_end)`` is unique, so a
report written twice (a restart inside a period, a second replica) is written once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin, JsonDocument, UtcDateTime


class PmJobRow(DocumentMixin, Base):
    """A PM job; ``body`` is the PmJob representation."""

    __tablename__ = "pm_jobs"

    # Created by an admin: measures the matching objects of every resource group.
    all_groups: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    finished: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class PmThresholdRow(DocumentMixin, Base):
    """A threshold; ``body`` is the Threshold representation."""

    __tablename__ = "pm_thresholds"

    # "object[/sub-object]" -> UP | DOWN, so that a restart neither repeats nor misses a crossing.
    crossing_state: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False, default=dict)


class PmReportRow(DocumentMixin, Base):
    """A performance report; ``body`` is its summary, ``data`` the compressed values."""

    __tablename__ = "pm_reports"
    __table_args__ = (
        UniqueConstraint("pm_job_id", "period_end", name="uq_pm_reports_job_period_end"),
        Index("ix_pm_reports_job_seq", "pm_job_id", "seq"),
    )

    pm_job_id: Mapped[str] = mapped_column(String(64), nullable=False)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

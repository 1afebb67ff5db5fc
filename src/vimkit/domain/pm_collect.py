"""The collector's in-memory engine: which objects to sample, per-period windows, reports due.

:class:`Collector` holds the active PM jobs and thresholds and turns each tick's driver samples
into closed collection periods, the reports that are due and the threshold crossings. It does no
I/O: the performance service feeds it (``ingest``) and persists what comes out, which keeps the
arithmetic testable with a fake clock and hand-made samples.

Cost model (docs/performance.md): one pass over the tick's samples computes every counter
increment once, then each distinct collection period length adds them into its one window —
jobs and thresholds with the same period share it. Per sample that is a few dict operations on
tuples; no objects are created per sample beyond the driver's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vimkit.domain.pm_catalogue import CATALOGUE, COUNTER_METRICS
from vimkit.domain.pm_derive import ClosedPeriod, Key, Window, align_up, as_number, counter_increment, crossing, derive
from vimkit.drivers.specs import MetricSample


@dataclass(slots=True)
class JobState:
    job_id: str
    group: str
    object_type: str
    measurements: tuple[str, ...]
    collection_ms: int
    reporting_ms: int
    start_ms: int
    boundary_ms: int | None
    members: frozenset[str]
    dynamic: bool  # membership follows objectFilter / "all objects", refreshed each period
    next_report_ms: int = 0
    pending: list[tuple[ClosedPeriod, frozenset[str]]] = field(default_factory=list)
    finished: bool = False

    def __post_init__(self) -> None:
        if not self.next_report_ms:
            self.next_report_ms = align_up(self.start_ms + 1, self.reporting_ms)


@dataclass(slots=True)
class ThresholdState:
    threshold_id: str
    group: str
    object_type: str
    measurement: str
    level: float
    hysteresis: float
    period_ms: int
    start_ms: int
    object_ids: frozenset[str]
    states: dict[str, str] = field(default_factory=dict)  # "object[/sub]" -> UP | DOWN


@dataclass(frozen=True, slots=True)
class ReadyReport:
    job_id: str
    group: str
    object_type: str
    measurements: tuple[str, ...]
    start_ms: int
    end_ms: int
    periods: tuple[tuple[ClosedPeriod, frozenset[str]], ...]
    final: bool


@dataclass(frozen=True, slots=True)
class Crossing:
    threshold_id: str
    group: str
    object_type: str
    object_id: str
    sub_object_id: str | None
    measurement: str
    value: float
    direction: str
    at_ms: int
    states: dict[str, str]


@dataclass(frozen=True, slots=True)
class TickOutcome:
    reports: list[ReadyReport]
    crossings: list[Crossing]
    closed_jobs: list[str]  # jobs whose collection period ended: refresh dynamic membership


def state_key(object_id: str, sub_object_id: str | None) -> str:
    return object_id if sub_object_id is None else f"{object_id}/{sub_object_id}"


class Collector:
    """Thread-safe: the service mutates it from request threads and ingests from a worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, JobState] = {}
        self.thresholds: dict[str, ThresholdState] = {}
        self._windows: dict[int, Window] = {}
        self._window_members: dict[int, frozenset[str]] = {}
        self._counters: dict[Key, tuple[float, int]] = {}
        self.latest: dict[int, ClosedPeriod] = {}  # last closed period per length, for /metrics
        self.groups: dict[str, str] = {}  # object id -> owning resource group (metric labels)
        self.sampled: tuple[str, ...] = ()

    # -- membership ---------------------------------------------------------------------------
    def add_job(self, job: JobState, groups: dict[str, str]) -> None:
        with self._lock:
            self.jobs[job.job_id] = job
            self.groups.update(groups)
            self._rebuild()

    def remove_job(self, job_id: str) -> None:
        with self._lock:
            if self.jobs.pop(job_id, None) is not None:
                self._rebuild()

    def set_members(self, job_id: str, members: frozenset[str], groups: dict[str, str]) -> None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.members == members:
                return
            job.members = members
            self.groups.update(groups)
            self._rebuild()

    def add_threshold(self, threshold: ThresholdState, groups: dict[str, str]) -> None:
        with self._lock:
            self.thresholds[threshold.threshold_id] = threshold
            self.groups.update(groups)
            self._rebuild()

    def remove_threshold(self, threshold_id: str) -> None:
        with self._lock:
            if self.thresholds.pop(threshold_id, None) is not None:
                self._rebuild()

    def _rebuild(self) -> None:
        members: dict[int, set[str]] = {}
        for job in self.jobs.values():
            if not job.finished:
                members.setdefault(job.collection_ms, set()).update(job.members)
        for threshold in self.thresholds.values():
            members.setdefault(threshold.period_ms, set()).update(threshold.object_ids)
        self._window_members = {period: frozenset(ids) for period, ids in members.items()}
        for period in list(self._windows):
            if period not in members:
                del self._windows[period]
                self.latest.pop(period, None)
        everything: set[str] = set().union(*members.values()) if members else set()
        # A counter baseline of an object nobody measures any more would turn its whole absence
        # into one period's delta if it came back; forget it instead.
        self._counters = {key: state for key, state in self._counters.items() if key[0] in everything}
        self.groups = {object_id: group for object_id, group in self.groups.items() if object_id in everything}
        self.sampled = tuple(sorted(everything))

    @property
    def active(self) -> bool:
        return bool(self._window_members)

    # -- a tick -------------------------------------------------------------------------------
    def ingest(self, now_ms: int, samples: Sequence[MetricSample]) -> TickOutcome:
        """Add the samples taken at ``now_ms`` and close every period that ended."""
        with self._lock:
            gauges: list[tuple[Key, float]] = []
            increments: list[tuple[Key, float]] = []
            counters = self._counters
            for sample in samples:
                metric = sample.metric
                key = (sample.object_id, sample.sub_object_id, metric)
                if metric in COUNTER_METRICS:
                    previous = counters.get(key)
                    counters[key] = (sample.value, sample.epoch)
                    if previous is not None:
                        increments.append((key, counter_increment(previous[0], previous[1], sample.value,
                                                                  sample.epoch)))
                else:
                    gauges.append((key, sample.value))
            closed: list[ClosedPeriod] = []
            for period_ms, members in self._window_members.items():
                end_ms = align_up(now_ms, period_ms)
                window = self._windows.get(period_ms)
                if window is None:
                    window = self._windows[period_ms] = Window(period_ms, end_ms)
                elif window.end_ms < end_ms:  # ticks were missed: the old period is over
                    closed.append(window.close())
                    window = self._windows[period_ms] = Window(period_ms, end_ms)
                accumulated = window.gauges
                for key, value in gauges:
                    if key[0] in members:
                        acc = accumulated.get(key)
                        if acc is None:
                            accumulated[key] = [1, value, value]
                        else:
                            acc[0] += 1
                            acc[1] += value
                            if value > acc[2]:
                                acc[2] = value
                deltas = window.counters
                for key, increment in increments:
                    if key[0] in members:
                        deltas[key] = deltas.get(key, 0.0) + increment
                if now_ms == end_ms:
                    closed.append(window.close())
                    self._windows[period_ms] = Window(period_ms, end_ms + period_ms)
            return self._dispatch(closed)

    def _dispatch(self, closed: Iterable[ClosedPeriod]) -> TickOutcome:
        reports: list[ReadyReport] = []
        crossings: list[Crossing] = []
        closed_jobs: list[str] = []
        for period in closed:
            self.latest[period.period_ms] = period
            for job in self.jobs.values():
                if job.collection_ms != period.period_ms or job.finished:
                    continue
                closed_jobs.append(job.job_id)
                report = self._job_period(job, period)
                if report is not None:
                    reports.append(report)
            watching = [t for t in self.thresholds.values()
                        if t.period_ms == period.period_ms and period.start_ms >= t.start_ms]
            if watching:
                crossings.extend(self._evaluate(watching, period))
        if any(job.finished for job in self.jobs.values() if job.job_id in closed_jobs):
            self._rebuild()
        return TickOutcome(reports, crossings, closed_jobs)

    def _job_period(self, job: JobState, period: ClosedPeriod) -> ReadyReport | None:
        if period.start_ms < job.start_ms:
            return None
        boundary = job.boundary_ms
        if boundary is not None and period.end_ms > boundary:
            job.finished = True
            return self._report(job, period.end_ms - period.period_ms, final=True)
        job.pending.append((period, job.members))
        last = boundary is not None and period.end_ms + period.period_ms > boundary
        if period.end_ms >= job.next_report_ms or last:
            report = self._report(job, period.end_ms, final=last)
            job.next_report_ms = align_up(period.end_ms + 1, job.reporting_ms)
            job.finished = last
            return report
        return None

    def _report(self, job: JobState, end_ms: int, final: bool) -> ReadyReport | None:
        pending, job.pending = job.pending, []
        if not pending:
            return None
        return ReadyReport(job.job_id, job.group, job.object_type, job.measurements, pending[0][0].start_ms,
                           end_ms, tuple(pending), final)

    def _evaluate(self, thresholds: list[ThresholdState], period: ClosedPeriod) -> list[Crossing]:
        by_object: dict[str, list[tuple[Key, Any]]] = {}
        wanted = frozenset().union(*(t.object_ids for t in thresholds))
        for key, value in period.values.items():
            if key[0] in wanted:
                by_object.setdefault(key[0], []).append((key, value))
        found: list[Crossing] = []
        for threshold in thresholds:
            measurement = CATALOGUE[threshold.measurement]
            for object_id in threshold.object_ids:
                for key, raw in by_object.get(object_id, ()):
                    if key[2] != measurement.source:
                        continue
                    value = derive(raw, measurement.method)
                    name = state_key(object_id, key[1])
                    state, direction = crossing(threshold.states.get(name), value, threshold.level,
                                                threshold.hysteresis)
                    if state is not None:
                        threshold.states[name] = state
                    if direction is not None:
                        found.append(Crossing(threshold.threshold_id, threshold.group, threshold.object_type,
                                              object_id, key[1], threshold.measurement, as_number(value),
                                              direction, period.end_ms, dict(threshold.states)))
        return found

    # -- exposition ---------------------------------------------------------------------------
    def latest_values(self) -> dict[Key, tuple[Any, int]]:
        """The newest closed value of every sampled key (shorter periods win), with its period end."""
        with self._lock:
            merged: dict[Key, tuple[Any, int]] = {}
            for period_ms in sorted(self.latest, reverse=True):
                period = self.latest[period_ms]
                for key, value in period.values.items():
                    merged[key] = (value, period.end_ms)
            return merged


def report_series(report: ReadyReport) -> dict[str, Any]:
    """The stored form of a report: columnar, so that 10,000 objects encode in one pass."""
    by_source: dict[Any, list[tuple[str, str]]] = {}
    for name in report.measurements:
        measurement = CATALOGUE[name]
        by_source.setdefault(measurement.source, []).append((name, measurement.method))
    count = len(report.periods)
    series: dict[tuple[str, str | None, str], list[Any]] = {}
    for index, (period, members) in enumerate(report.periods):
        for key, raw in period.values.items():
            if key[0] not in members:
                continue
            for name, method in by_source.get(key[2], ()):
                values = series.get((key[0], key[1], name))
                if values is None:
                    values = series[(key[0], key[1], name)] = [None] * count
                values[index] = as_number(derive(raw, method))
    return {
        "objectType": report.object_type,
        "periodEnds": [period.end_ms for period, _ in report.periods],
        "series": [[object_id, sub_id, name, values] for (object_id, sub_id, name), values in series.items()],
    }

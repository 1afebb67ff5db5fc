"""The collector's in-memory engine: which objects to sample, per-period windows, reports due.

:class:`Collector` holds the active PM jobs and thresholds and turns each tick's driver samples
into closed collection periods, the reports that are due and the threshold crossings. It does no
I/O: the performance service feeds it (``ingest``) and persists what comes out, which keeps the
arithmetic testable with a fake clock and hand-made samples.

Cost model (docs/performance.md): one pass over the tick's samples computes every counter
increment once, then each distinct collection period length adds them into its one window —
jobs and thresholds with the same period share it. Per sample that is a few dict operations, and
nothing made for a sample outlives the tick (keys are interned, accumulators are plain numbers).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from itertools import zip_longest
from dataclasses import dataclass, field
from typing import Any

import orjson

from vimkit.domain.pm_catalogue import CATALOGUE, COUNTER_METRICS, DELTA, MEAN, PEAK
from vimkit.domain.pm_derive import ClosedPeriod, Key, Window, align_up, as_number, counter_increment, crossing
from vimkit.drivers.base import MetricColumn, metric_columns
from vimkit.drivers.model import MetricName
from vimkit.drivers.specs import MetricSample

# Raw metric names as plain strings: keys holding enum members would stay tracked by the cyclic
# garbage collector for as long as they live.
_CODES = {metric: metric.value for metric in MetricName}
_COUNTER_CODES = frozenset(metric.value for metric in COUNTER_METRICS)


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
    layout: ReportLayout | None = None

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
    layout: ReportLayout | None = None


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
        # Counter baselines, and one canonical key tuple per (object, sub-object, metric) that every
        # window reuses: keys made per sample would otherwise outlive the tick in every window.
        self._interned: dict[Key, Key] = {}
        self._last_value: dict[Key, float] = {}
        self._last_epoch: dict[Key, int] = {}
        self.latest: dict[int, ClosedPeriod] = {}  # last closed period per length, for /metrics
        self.groups: dict[str, str] = {}  # object id -> owning resource group (metric labels)
        self.sampled: tuple[str, ...] = ()
        # Per metric, the last column's ids and their interned keys: a backend returns the same
        # objects in the same order tick after tick, so the keys are looked up once, not per tick.
        self._column_keys: dict[str, tuple[Sequence[str], Sequence[str | None] | None, list[Key]]] = {}
        # Per counter metric, the last column (keys, values, epochs): newer than the per-key
        # baselines above for those keys until settled back into them (_settle_columns).
        self._last_columns: dict[str, tuple[list[Key], Sequence[float], Sequence[int]]] = {}

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
        self._settle_columns()
        # A counter baseline of an object nobody measures any more would turn its whole absence
        # into one period's delta if it came back; forget it instead.
        if any(key[0] not in everything for key in self._interned):
            self._interned = {key: key for key in self._interned if key[0] in everything}
            self._last_value = {key: v for key, v in self._last_value.items() if key[0] in everything}
            self._last_epoch = {key: v for key, v in self._last_epoch.items() if key[0] in everything}
        self.groups = {object_id: group for object_id, group in self.groups.items() if object_id in everything}
        self.sampled = tuple(sorted(everything))
        self._column_keys.clear()

    @property
    def active(self) -> bool:
        return bool(self._window_members)

    # -- a tick -------------------------------------------------------------------------------
    def ingest(self, now_ms: int, samples: Sequence[MetricSample]) -> TickOutcome:
        """Add the samples taken at ``now_ms`` and close every period that ended."""
        return self.ingest_columns(now_ms, metric_columns(samples))

    def ingest_columns(self, now_ms: int, columns: Sequence[MetricColumn]) -> TickOutcome:
        """:meth:`ingest` for samples in columns (``sample_metric_columns``)."""
        with self._lock:
            closed: list[ClosedPeriod] = []
            open_windows: list[tuple[frozenset[str], Window]] = []
            for period_ms, members in self._window_members.items():
                end_ms = align_up(now_ms, period_ms)
                window = self._windows.get(period_ms)
                if window is None:
                    window = self._windows[period_ms] = Window(period_ms, end_ms)
                elif window.end_ms < end_ms:  # ticks were missed: the old period is over
                    closed.append(window.close())
                    window = self._windows[period_ms] = Window(period_ms, end_ms)
                open_windows.append((members, window))
            parts: list[tuple[list[Any], list[Any]]] = [([], []) for _window in open_windows]
            for column in columns:
                self._add(column, open_windows, parts)
            for (_members, window), (gauges, increments) in zip(open_windows, parts):
                window.add_tick(gauges, increments)
            for period_ms, window in list(self._windows.items()):
                if now_ms == window.end_ms:
                    closed.append(window.close())
                    self._windows[period_ms] = Window(period_ms, window.end_ms + period_ms)
            return self._dispatch(closed)

    def _keys(self, code: str, column: MetricColumn) -> list[Key]:
        """The interned key of each sample of ``column`` (cached while the column's ids repeat)."""
        ids, subs = column.object_ids, column.sub_object_ids
        cached = self._column_keys.get(code)
        if cached is not None and cached[0] == ids and cached[1] == subs:
            return cached[2]
        interned = self._interned
        keys: list[Key] = []
        for object_id, sub_object_id in zip(ids, subs if subs is not None else [None] * len(ids)):
            probe = (object_id, sub_object_id, code)
            key = interned.get(probe)
            if key is None:
                key = interned[probe] = probe
            keys.append(key)
        self._column_keys[code] = (ids, subs, keys)
        return keys

    def _add(self, column: MetricColumn, windows: list[tuple[frozenset[str], Window]],
             parts: list[tuple[list[Any], list[Any]]]) -> None:
        """One column into the part of this tick of every open window whose objects include its
        samples' objects: each counter increment is computed once (for 10,000 computes a tick has
        70,000 samples), and a window measuring every object of the column takes it whole."""
        code = _CODES[column.metric]
        keys = self._keys(code, column)
        values: Sequence[float | None] = column.values
        if code in _COUNTER_CODES:
            values = self._increments(code, keys, column)
        object_ids = column.object_ids
        counter = code in _COUNTER_CODES
        for (members, _window), (gauges, increments) in zip(windows, parts):
            if members.issuperset(object_ids):
                part_keys, part = keys, values
            elif members.isdisjoint(object_ids):
                continue
            else:
                chosen = [index for index, key in enumerate(keys) if key[0] in members]
                part_keys, part = [keys[index] for index in chosen], [values[index] for index in chosen]
            (increments if counter else gauges).append((part_keys, part))

    def _increments(self, code: str, keys: list[Key], column: MetricColumn) -> list[float | None]:
        """Each counter's increase since its previous sample (None for a first sample: only a
        baseline). While a counter column keeps the same objects, the previous values are the
        previous column itself and the increments one comprehension."""
        values = column.values
        epochs = column.epochs if column.epochs is not None else [0] * len(keys)
        previous = self._last_columns.get(code)
        if previous is not None and previous[0] is keys:
            _keys, last_values, last_epochs = previous
            increments: list[float | None] = [
                value - last if epoch == last_epoch and value >= last else counter_increment(last, last_epoch, value, epoch)
                for value, epoch, last, last_epoch in zip(values, epochs, last_values, last_epochs)]
        else:
            self._settle_columns(code)
            last_value, last_epoch = self._last_value, self._last_epoch
            increments = []
            for key, value, epoch in zip(keys, values, epochs):
                last = last_value.get(key)
                last_value[key] = value
                previous_epoch = last_epoch.get(key, epoch)
                last_epoch[key] = epoch
                increments.append(None if last is None else counter_increment(last, previous_epoch, value, epoch))
        self._last_columns[code] = (keys, values, epochs)
        return increments

    def _settle_columns(self, code: str | None = None) -> None:
        """Write the latest counter columns (all, or ``code``'s) back into the per-key baselines."""
        for name in [code] if code is not None else list(self._last_columns):
            latest = self._last_columns.pop(name, None)
            if latest is not None:
                keys, values, epochs = latest
                self._last_value.update(zip(keys, values))
                self._last_epoch.update(zip(keys, epochs))

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
        if job.layout is None or job.layout.members is not job.members:
            job.layout = ReportLayout(job.measurements, job.members)
        return ReadyReport(job.job_id, job.group, job.object_type, job.measurements, pending[0][0].start_ms,
                           end_ms, tuple(pending), final, job.layout)

    def _evaluate(self, thresholds: list[ThresholdState], period: ClosedPeriod) -> list[Crossing]:
        wanted = frozenset().union(*(t.object_ids for t in thresholds))
        by_object: dict[str, list[Key]] = {}
        for key in period.keys():
            if key[0] in wanted:
                by_object.setdefault(key[0], []).append(key)
        found: list[Crossing] = []
        for threshold in thresholds:
            measurement = CATALOGUE[threshold.measurement]
            for object_id in threshold.object_ids:
                for key in by_object.get(object_id, ()):
                    if key[2] != measurement.source:
                        continue
                    value = period.value(key, measurement.method)
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
    def latest_periods(self) -> dict[Key, ClosedPeriod]:
        """The newest closed period holding each sampled key (shorter periods win)."""
        with self._lock:
            newest: dict[Key, ClosedPeriod] = {}
            for period_ms in sorted(self.latest, reverse=True):
                period = self.latest[period_ms]
                newest.update(dict.fromkeys(period.keys(), period))
            return newest


class ReportLayout:
    """Which series a job's reports have, in which order: kept on the job between reports, so that
    for a job whose objects do not change (the common case) 100,000 series are laid out once
    rather than every reporting period. Append-only while the job's members stay the same; a
    series without a value in a report (its object stopped, or left) is simply not an entry."""

    def __init__(self, measurements: tuple[str, ...], members: frozenset[str]) -> None:
        self.members = members
        self.measurements = measurements
        self.specs: dict[str, list[tuple[int, str]]] = {}
        for index, name in enumerate(measurements):
            measurement = CATALOGUE[name]
            self.specs.setdefault(measurement.source.value, []).append((index, measurement.method))
        self.base: dict[Key, int] = {}
        self.objects: dict[str, int] = {}
        self.subs: dict[str, int] = {}
        self.series_object: list[int] = []
        self.series_sub: list[int] = []
        self.series_metric: list[int] = []

        # Per key list of a whole-column period (ClosedPeriod.gauge_columns / delta_columns): where
        # its values go, computed once while the list and the job's members stay the same.
        self._plans: dict[int, _Plan] = {}
        # report_blob's serialised and compressed leading part, for this version of the layout
        self.prefix: tuple[tuple[Any, ...], bytes, Any] | None = None

    def planned(self, keys: Sequence[Key], members: frozenset[str]) -> bool:
        cached = self._plans.get(id(keys))
        return cached is not None and cached.keys is keys and cached.members is members

    def add_object_major(self, columns: list[Sequence[Key]], members: frozenset[str]) -> None:
        """Lay out the new keys of several columns one object at a time (the first object's
        series of every column, then the second's…), the order series had when samples came one
        object at a time, so that a report lists each object's entries together."""
        base, specs = self.base, self.specs
        for row in zip_longest(*columns):
            for key in row:
                if key is not None and key not in base and key[2] in specs and key[0] in members:
                    self.add(key)

    def plan(self, keys: Sequence[Key], members: frozenset[str]) -> _Plan | None:
        if self.planned(keys, members):
            return self._plans[id(keys)]
        if not keys or keys[0][2] not in self.specs:
            return None
        chosen = None if members.issuperset([key[0] for key in keys]) else \
            [index for index, key in enumerate(keys) if key[0] in members]
        base = self.base
        starts = []
        for key in keys if chosen is None else [keys[index] for index in chosen]:
            start = base.get(key)
            starts.append(self.add(key) if start is None else start)
        targets: list[tuple[slice | list[int], str]] = []
        for offset, (_index, method) in enumerate(self.specs[keys[0][2]]):
            positions = [start + offset for start in starts]
            step = positions[1] - positions[0] if len(positions) > 1 else 1
            if positions and step > 0 and positions == list(range(positions[0], positions[-1] + 1, step)):
                targets.append((slice(positions[0], positions[-1] + 1, step), method))
            else:
                targets.append((positions, method))
        series_object = self.series_object
        plan = self._plans[id(keys)] = _Plan(keys, members, chosen, targets, {series_object[s] for s in starts})
        return plan

    def add(self, key: Key) -> int:
        start = self.base[key] = len(self.series_metric)
        object_index = self.objects.setdefault(key[0], len(self.objects))
        sub_index = -1 if key[1] is None else self.subs.setdefault(key[1], len(self.subs))
        for metric_index, _method in self.specs[key[2]]:
            self.series_object.append(object_index)
            self.series_sub.append(sub_index)
            self.series_metric.append(metric_index)
        return start


@dataclass(frozen=True, slots=True)
class _Plan:
    keys: Sequence[Key]
    members: frozenset[str]
    chosen: list[int] | None  # the positions in ``keys`` of the job's objects (None: all)
    targets: list[tuple[slice | list[int], str]]  # per measurement of the metric: where, and how derived
    present: set[int]  # object indices


def _place(column: list[float | None], plan: _Plan, values: dict[str, Sequence[float]]) -> None:
    for target, method in plan.targets:
        chosen = values[method] if plan.chosen is None else [values[method][index] for index in plan.chosen]
        if isinstance(target, slice):
            column[target] = chosen
        else:
            for position, value in zip(target, chosen):
                column[position] = value


def report_series(report: ReadyReport, layout: ReportLayout | None = None) -> tuple[dict[str, Any], list[str]]:
    """The stored form of a report — columnar and de-duplicated: the object and sub-object ids
    once each, three small integers per series, one list of values per collection period — and
    the objects that have values in it. A period folded in whole columns is laid out a column at
    a time (slice assignments, once the layout is known); anything else key by key."""
    if layout is None or layout.measurements != report.measurements:
        layout = ReportLayout(report.measurements, frozenset())
    specs, base = layout.specs, layout.base
    series_object = layout.series_object
    present: set[int] = set()
    columns: list[list[float | None]] = []
    for period, members in report.periods:
        for folded in (period.gauge_columns, period.delta_columns):
            if folded and not all(layout.planned(c.keys, members) for c in folded):
                layout.add_object_major([c.keys for c in folded], members)
        gauge_plans = [(layout.plan(c.keys, members), c) for c in period.gauge_columns or ()]
        delta_plans = [(layout.plan(c.keys, members), c) for c in period.delta_columns or ()]
        column: list[float | None] = [None] * len(series_object)
        for plan, gauge in gauge_plans:
            if plan is not None:
                count = gauge.count
                _place(column, plan, {MEAN: [total / count for total in gauge.totals], PEAK: gauge.peaks})
                present |= plan.present
        for plan, counter in delta_plans:
            if plan is not None:
                _place(column, plan, {DELTA: counter.deltas})
                present |= plan.present
        total, peak = (period.total, period.peak) if period.gauge_columns is None else ({}, {})
        for key, count in (() if period.gauge_columns is not None else period.count.items()):
            if key[0] not in members:
                continue
            start = base.get(key)
            if start is None:
                if key[2] not in specs:
                    continue
                start = layout.add(key)
                column.extend([None] * (len(series_object) - len(column)))
            present.add(series_object[start])
            for offset, (_index, method) in enumerate(specs[key[2]]):
                column[start + offset] = total[key] / count if method == MEAN else peak[key]
        for key, delta in (() if period.delta_columns is not None else period.delta.items()):
            if key[0] not in members:
                continue
            start = base.get(key)
            if start is None:
                if key[2] not in specs:
                    continue
                start = layout.add(key)
                column.extend([None] * (len(series_object) - len(column)))
            present.add(series_object[start])
            column[start] = delta
        columns.append(column)
    for column in columns:
        column.extend([None] * (len(series_object) - len(column)))
    object_ids = list(layout.objects)
    document = {"objectType": report.object_type, "measurements": list(report.measurements), "objects": object_ids,
                "subObjects": list(layout.subs), "seriesObject": series_object, "seriesSub": layout.series_sub,
                "seriesMetric": layout.series_metric,
                "periodEnds": [period.end_ms for period, _ in report.periods], "values": columns}
    return document, [object_ids[index] for index in sorted(present)]


_STATIC = ("objectType", "measurements", "objects", "subObjects", "seriesObject", "seriesSub", "seriesMetric")


def report_blob(report: ReadyReport, layout: ReportLayout | None = None) -> tuple[bytes, list[str]]:
    """:func:`report_series` serialised (JSON) and compressed (zlib), as a report row stores it.

    The document's leading keys — ids and series layout, about half of it — change only when
    the layout does, so the job's layout keeps them serialised and a compressor that has already
    taken them in; each report then serialises and compresses only its values, continuing a
    copy of that compressor. The bytes are one ordinary zlib stream of the whole document."""
    document, objects = report_series(report, layout)
    if layout is None or layout.measurements != report.measurements:
        return zlib.compress(orjson.dumps(document), 1), objects
    version = (report.object_type, report.measurements, len(layout.series_object), len(layout.objects),
               len(layout.subs))
    if layout.prefix is None or layout.prefix[0] != version:
        compressor = zlib.compressobj(1)
        head = orjson.dumps({key: document[key] for key in _STATIC})[:-1] + b","
        layout.prefix = (version, compressor.compress(head), compressor)
    _version, compressed_head, compressor = layout.prefix
    rest = compressor.copy()
    tail = orjson.dumps({"periodEnds": document["periodEnds"], "values": document["values"]})[1:]
    return compressed_head + rest.compress(tail) + rest.flush(), objects

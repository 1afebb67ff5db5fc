"""Pure arithmetic of performance management: counter deltas, period windows, threshold crossings.

Nothing here touches the database, the clock or the driver, so the unit tests can hold every
rule to exact numbers (tests/unit/test_pm_derive.py).

Time is counted in integer milliseconds since the epoch so that period boundaries are exact:
a collection period of length P is the half-open interval ``(end − P, end]`` with ``end`` a
multiple of P. A sample taken exactly at a boundary closes the period it ends, which makes a
counter's delta over a period ``counter(end) − counter(end − P)`` and lets the report be written
as soon as that last sample is in.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat, zip_longest
from typing import Any

#: Cumulative counters are 64-bit (RFC 2863 ifHC*, libvirt, /proc); a decrease of a counter still
#: in its upper half is a wrap-around, any other decrease a reset the backend did not announce.
COUNTER_WRAP = 2**64
_WRAP_FLOOR = 2**63

Key = tuple[str, str | None, Hashable]  # (object id, sub-object id, raw metric name)


def counter_increment(previous: float, previous_epoch: int, value: float, epoch: int) -> float:
    """How much a cumulative counter grew between two samples; never negative.

    A new ``epoch`` means the counter restarted from zero in between (reboot, migration,
    re-plug): everything it counts now happened since the restart, so the increment is the new
    value. What the old counter counted after its last sample is unknowable and is not invented.
    """
    if epoch != previous_epoch:
        return value
    if value >= previous:
        return value - previous
    if previous >= _WRAP_FLOOR:
        return COUNTER_WRAP - previous + value
    return value


def align_up(moment_ms: int, period_ms: int) -> int:
    """The first period boundary at or after ``moment_ms``: the end of the collection period
    holding that moment (a boundary belongs to the period it ends), and where a job created at
    that moment starts collecting, so that its first period is a whole one."""
    return -(-moment_ms // period_ms) * period_ms


@dataclass(slots=True)
class Window:
    """One collection period being accumulated.

    Samples arrive a tick at a time as columns aligned with lists of the collector's interned
    keys (``add_tick``). While every metric keeps one key list through the period (the common
    case: the same objects every tick, and the collector reuses the list), each column is folded
    at once into running columns — totals, peaks and count per gauge, sums per counter — with a
    few list comprehensions rather than dict operations per sample, and memory stays one column
    per metric however long the period. Anything else (objects joining or leaving, a baseline
    sample) turns the window into per-key accumulation (:meth:`add`), tick by tick and one object
    at a time, so the numbers — and the order keys first appear in — are the same either way.

    Accumulators are plain dicts of numbers keyed by the interned keys, not a container per key:
    with 10,000 objects a period holds some 70,000 keys, and per-key lists or tuples would be
    garbage the cyclic collector keeps re-scanning (it cost more than the arithmetic itself).
    """

    period_ms: int
    end_ms: int
    count: dict[Key, int] = field(default_factory=dict)
    total: dict[Key, float] = field(default_factory=dict)
    peak: dict[Key, float] = field(default_factory=dict)
    delta: dict[Key, float] = field(default_factory=dict)
    # running columns while whole-column folding holds (None: per-key dicts from then on)
    gauge_columns: list[list[Any]] | None = field(default_factory=list)  # [keys, totals, peaks, count]
    delta_columns: list[list[Any]] | None = field(default_factory=list)  # [keys, sums]

    def add(self, key: Key, value: float) -> None:
        count = self.count.get(key)
        if count is None:
            self.count[key] = 1
            self.total[key] = value
            self.peak[key] = value
        else:
            self.count[key] = count + 1
            self.total[key] += value
            if value > self.peak[key]:
                self.peak[key] = value

    def add_tick(self, gauges: list[tuple[Sequence[Key], Sequence[float]]],
                 increments: list[tuple[Sequence[Key], Sequence[float | None]]]) -> None:
        """One tick's gauge columns and counter increments (None: the sample was only a
        baseline); in each (keys, values) ``keys[i]`` is the key of ``values[i]``."""
        if gauges:
            self._add_gauges(gauges)
        if increments:
            self._add_increments(increments)

    def _add_gauges(self, gauges: list[tuple[Sequence[Key], Sequence[float]]]) -> None:
        running = self.gauge_columns
        if running is not None and _foldable(running, gauges):
            by_list = {id(column[0]): column for column in running}
            for keys, values in gauges:
                column = by_list.get(id(keys))
                if column is None:
                    running.append([keys, values, values, 1])
                else:
                    column[1] = [total + value for total, value in zip(column[1], values)]
                    column[2] = [value if value > peak else peak for peak, value in zip(column[2], values)]
                    column[3] += 1
            return
        if running is not None:  # from now on key by key: first what was folded so far
            self.gauge_columns = None
            for row in zip_longest(*(zip(keys, totals, peaks, repeat(count)) for keys, totals, peaks, count in running)):
                for item in row:
                    if item is not None:
                        key, total, peak, count = item
                        self.count[key] = count
                        self.total[key] = total
                        self.peak[key] = peak
        for row in zip_longest(*(zip(keys, values) for keys, values in gauges)):
            for sample in row:
                if sample is not None:
                    self.add(*sample)

    def _add_increments(self, increments: list[tuple[Sequence[Key], Sequence[float | None]]]) -> None:
        running = self.delta_columns
        if running is not None and _foldable(running, increments) \
                and not any(None in values for _keys, values in increments):
            by_list = {id(column[0]): column for column in running}
            for keys, values in increments:
                column = by_list.get(id(keys))
                if column is None:
                    running.append([keys, [0.0 + value for value in values]])  # type: ignore[operator]
                else:
                    column[1] = [total + value for total, value in zip(column[1], values)]
            return
        delta = self.delta
        if running is not None:
            self.delta_columns = None
            for row in zip_longest(*(zip(keys, sums) for keys, sums in running)):
                for item in row:
                    if item is not None:
                        delta[item[0]] = item[1]
        for row in zip_longest(*(zip(keys, values) for keys, values in increments)):
            for item in row:
                if item is not None and item[1] is not None:
                    delta[item[0]] = delta.get(item[0], 0.0) + item[1]

    def close(self) -> ClosedPeriod:
        # whole columns only when all the period's values are in them (not after add() by hand)
        gauges = None if not self.gauge_columns or self.count else tuple(
            GaugeColumn(keys, totals, peaks, count) for keys, totals, peaks, count in self.gauge_columns)
        deltas = None if not self.delta_columns or self.delta else tuple(
            DeltaColumn(keys, sums) for keys, sums in self.delta_columns)
        return ClosedPeriod(self.period_ms, self.end_ms, self.count, self.total, self.peak, self.delta, gauges,
                            deltas)


def _foldable(running: list[list[Any]], columns: list[tuple[Sequence[Key], Sequence[Any]]]) -> bool:
    """Whole-column folding holds while each metric (the code in its keys) has one key list."""
    lists = {keys[0][2]: id(keys) for keys, *_rest in running}
    for keys, _values in columns:
        if not keys:
            return False
        known = lists.setdefault(keys[0][2], id(keys))
        if known != id(keys):
            return False
    return True


@dataclass(frozen=True, slots=True)
class GaugeColumn:
    """A gauge folded whole over a period: every key has ``count`` samples."""

    keys: Sequence[Key]
    totals: Sequence[float]
    peaks: Sequence[float]
    count: int


@dataclass(frozen=True, slots=True)
class DeltaColumn:
    keys: Sequence[Key]
    deltas: Sequence[float]


class ClosedPeriod:
    """A finished collection period: gauges by sample count, total and peak; counters by delta.

    ``gauge_columns`` / ``delta_columns`` hold the values as whole columns when every key of a
    metric was sampled at every tick of the period (report building lays them out a column at a
    time); the per-key dicts are then only built when something asks for them (thresholds, the
    Prometheus exposition), not on the way to a report.
    """

    __slots__ = ("period_ms", "end_ms", "gauge_columns", "delta_columns", "_count", "_total", "_peak", "_delta")

    def __init__(self, period_ms: int, end_ms: int, count: dict[Key, int] | None = None,
                 total: dict[Key, float] | None = None, peak: dict[Key, float] | None = None,
                 delta: dict[Key, float] | None = None, gauge_columns: tuple[GaugeColumn, ...] | None = None,
                 delta_columns: tuple[DeltaColumn, ...] | None = None) -> None:
        self.period_ms = period_ms
        self.end_ms = end_ms
        self.gauge_columns = gauge_columns
        self.delta_columns = delta_columns
        if gauge_columns is None:
            self._count, self._total, self._peak = count or {}, total or {}, peak or {}
        else:
            self._count = self._total = self._peak = None
        self._delta = (delta or {}) if delta_columns is None else None

    def _gauges(self) -> tuple[dict[Key, int], dict[Key, float], dict[Key, float]]:
        if self._count is None or self._total is None or self._peak is None:
            count: dict[Key, int] = {}
            total: dict[Key, float] = {}
            peak: dict[Key, float] = {}
            for column in self.gauge_columns or ():
                count.update(dict.fromkeys(column.keys, column.count))
                total.update(zip(column.keys, column.totals))
                peak.update(zip(column.keys, column.peaks))
            self._count, self._total, self._peak = count, total, peak
        return self._count, self._total, self._peak

    @property
    def count(self) -> dict[Key, int]:
        return self._gauges()[0]

    @property
    def total(self) -> dict[Key, float]:
        return self._gauges()[1]

    @property
    def peak(self) -> dict[Key, float]:
        return self._gauges()[2]

    @property
    def delta(self) -> dict[Key, float]:
        if self._delta is None:
            delta: dict[Key, float] = {}
            for column in self.delta_columns or ():
                delta.update(zip(column.keys, column.deltas))
            self._delta = delta
        return self._delta

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.period_ms

    def keys(self) -> Iterator[Key]:
        yield from self.count
        yield from self.delta

    def value(self, key: Key, method: str) -> float:
        """The measurement of one key: ``mean``/``max`` of a gauge, ``delta`` of a counter."""
        if method == "mean":
            return self.total[key] / self.count[key]
        if method == "max":
            return self.peak[key]
        return self.delta[key]


def crossing(state: str | None, value: float, level: float, hysteresis: float) -> tuple[str | None, str | None]:
    """(new state, direction to notify or None) of a SINGLE_VALUE threshold.

    UP when the value rises above ``level + hysteresis``, DOWN when it falls below
    ``level − hysteresis``; inside the band nothing changes, and neither direction repeats until
    the opposite crossing happened. The first value seen below the band sets the state without a
    notification: nothing was crossed, the object simply started there.
    """
    if value > level + hysteresis:
        return ("UP", "UP") if state != "UP" else (state, None)
    if value < level - hysteresis:
        return ("DOWN", "DOWN") if state == "UP" else ("DOWN", None)
    return state, None


def as_number(value: float) -> float | int:
    """Whole numbers (counter deltas) as JSON integers."""
    return int(value) if float(value).is_integer() else value

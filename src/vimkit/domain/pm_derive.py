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

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
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

    Accumulators are kept as plain dicts of numbers keyed by the collector's interned keys, not as
    a container per key: with 10,000 objects a period holds some 70,000 keys, and per-key lists or
    tuples would be garbage the cyclic collector keeps re-scanning (it cost more than the
    arithmetic itself).
    """

    period_ms: int
    end_ms: int
    count: dict[Key, int] = field(default_factory=dict)
    total: dict[Key, float] = field(default_factory=dict)
    peak: dict[Key, float] = field(default_factory=dict)
    delta: dict[Key, float] = field(default_factory=dict)

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

    def close(self) -> ClosedPeriod:
        return ClosedPeriod(self.period_ms, self.end_ms, self.count, self.total, self.peak, self.delta)


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """A finished collection period: gauges by sample count, total and peak; counters by delta."""

    period_ms: int
    end_ms: int
    count: dict[Key, int]
    total: dict[Key, float]
    peak: dict[Key, float]
    delta: dict[Key, float]

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

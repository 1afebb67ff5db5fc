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

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

#: Cumulative counters are 64-bit (RFC 2863 ifHC*, libvirt, /proc); a decrease of a counter still
#: in its upper half is a wrap-around, any other decrease a reset the backend did not announce.
COUNTER_WRAP = 2**64
_WRAP_FLOOR = 2**63

Key = tuple[str, str | None, Hashable]  # (object id, sub-object id, raw metric)


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
    """One collection period being accumulated: gauges as [count, total, peak], counters as the
    sum of their increments."""

    period_ms: int
    end_ms: int
    gauges: dict[Key, list[float]] = field(default_factory=dict)
    counters: dict[Key, float] = field(default_factory=dict)

    def close(self) -> ClosedPeriod:
        values: dict[Key, Any] = {key: (acc[1] / acc[0], acc[2]) for key, acc in self.gauges.items()}
        values.update(self.counters)
        return ClosedPeriod(self.period_ms, self.end_ms, values)


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """A finished collection period: gauge keys map to (mean, peak), counter keys to the delta."""

    period_ms: int
    end_ms: int
    values: dict[Key, Any]

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.period_ms


def derive(value: Any, method: str) -> float:
    """The measurement of one closed key: ``mean``/``max`` of a gauge, ``delta`` of a counter."""
    if method == "mean":
        return value[0]
    if method == "max":
        return value[1]
    return value


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

"""The pure arithmetic of performance management (vimkit.domain.pm_derive)."""

from __future__ import annotations

import pytest

from vimkit.domain.pm_derive import COUNTER_WRAP, Window, align_up, as_number, counter_increment, crossing


def test_counter_increment_within_one_epoch() -> None:
    assert counter_increment(100.0, 3, 160.0, 3) == 60.0
    assert counter_increment(160.0, 3, 160.0, 3) == 0.0


def test_a_new_epoch_counts_from_zero_and_is_never_negative() -> None:
    # reboot: the counter restarted; everything it shows now happened since the restart
    assert counter_increment(5_000.0, 1, 40.0, 2) == 40.0
    assert counter_increment(5_000.0, 1, 9_000.0, 2) == 9_000.0
    assert counter_increment(5_000.0, 1, 0.0, 2) == 0.0


def test_a_decrease_without_a_new_epoch_is_a_wrap_only_near_the_top() -> None:
    assert counter_increment(float(COUNTER_WRAP - 4096), 0, 1024.0, 0) == 5120.0  # (floats exact here)
    # an unannounced reset (a backend without epochs): counted from zero, not as a huge wrap
    assert counter_increment(1_000.0, 0, 30.0, 0) == 30.0


@pytest.mark.parametrize(("moment", "period", "end"), [(0, 10, 0), (1, 10, 10), (10, 10, 10), (11, 10, 20),
                                                       (19_999, 5_000, 20_000), (20_000, 5_000, 20_000)])
def test_align_up(moment: int, period: int, end: int) -> None:
    assert align_up(moment, period) == end


def test_window_mean_peak_and_delta() -> None:
    window = Window(10_000, 20_000)
    key, counter = ("vm", None, "cpu"), ("vm", "p", "rx")
    for value in (10.0, 30.0, 20.0):
        window.add(key, value)
    window.delta[counter] = 1234.0
    closed = window.close()
    assert closed.start_ms == 10_000 and closed.end_ms == 20_000
    assert list(closed.keys()) == [key, counter]
    assert closed.value(key, "mean") == 20.0
    assert closed.value(key, "max") == 30.0
    assert closed.value(counter, "delta") == 1234.0
    assert as_number(1234.0) == 1234 and isinstance(as_number(1234.0), int) and as_number(0.5) == 0.5


def _run(values: list[float], level: float, hysteresis: float) -> list[str]:
    state, seen = None, []
    for value in values:
        state, direction = crossing(state, value, level, hysteresis)
        if direction:
            seen.append(direction)
    return seen


def test_crossing_without_hysteresis() -> None:
    assert _run([10, 20, 60, 70, 40, 30, 55, 50, 49], 50, 0) == ["UP", "DOWN", "UP", "DOWN"]


def test_no_repeat_until_the_opposite_crossing() -> None:
    assert _run([60, 70, 80, 90], 50, 0) == ["UP"]
    assert _run([60, 40, 30, 20], 50, 0) == ["UP", "DOWN"]


def test_crossing_with_hysteresis() -> None:
    # inside the band 45..55 nothing happens; a dip to 46 does not end an UP
    assert _run([50, 54, 56, 46, 54, 44, 46, 54, 56], 50, 5) == ["UP", "DOWN", "UP"]
    assert _run([55, 45, 55, 45], 50, 5) == []  # on the band's edges is not across them


def test_the_first_value_below_is_not_a_crossing() -> None:
    assert _run([10, 20], 50, 5) == []
    assert crossing(None, 10, 50, 5) == ("DOWN", None)
    assert crossing(None, 50, 50, 5) == (None, None)


def test_a_long_window_keeps_one_running_column_per_metric() -> None:
    """An hour of 5 s ticks over the same objects: memory stays one column per metric, and the
    result is the per-sample one; a key list that changes mid-period switches to per-key sums."""
    keys = [(f"vm{i}", None, "cpu") for i in range(3)]
    counters = [(f"vm{i}", "p", "rx") for i in range(3)]
    window = Window(3_600_000, 3_600_000)
    for tick in range(720):
        window.add_tick([(keys, [float(tick % 7 + i) for i in range(3)])], [(counters, [1.0, 2.0, 3.0])])
        assert window.gauge_columns is not None and len(window.gauge_columns) == 1
    closed = window.close()
    assert closed.gauge_columns is not None and closed.delta_columns is not None
    expected = []
    for i in range(3):
        total = 0.0
        for tick in range(720):
            total += float(tick % 7 + i)  # in order, as samples are added
        expected.append(total / 720)
    assert [closed.value(key, "mean") for key in keys] == expected
    assert [closed.value(key, "max") for key in keys] == [6.0, 7.0, 8.0]
    assert [closed.value(key, "delta") for key in counters] == [720.0, 1440.0, 2160.0]
    mixed = Window(10_000, 10_000)
    mixed.add_tick([(keys, [1.0, 2.0, 3.0])], [(counters, [None, None, None])])
    mixed.add_tick([(keys[:2], [5.0, 0.5])], [(counters, [4.0, 5.0, 6.0])])  # vm2 stopped; list changed
    closed = mixed.close()
    assert closed.gauge_columns is None and closed.delta_columns is None
    assert list(closed.count.items()) == [(keys[0], 2), (keys[1], 2), (keys[2], 1)]
    assert [closed.value(key, "mean") for key in keys] == [3.0, 1.25, 3.0]
    assert [closed.value(key, "max") for key in keys] == [5.0, 2.0, 3.0]
    assert closed.delta == {counters[0]: 4.0, counters[1]: 5.0, counters[2]: 6.0}

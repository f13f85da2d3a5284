"""The benchmarks' one timing loop (experiments/bench/timing.py): call counts, what is timed,
and the clocks, checked against a fake clock whose readings are known."""

from __future__ import annotations

import pytest

from bench import timing
from bench.timing import time_call


class FakeClock:
    """perf_counter/process_time that advance by each call's cost (`fn` adds it)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def spend(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def test_warmup_is_untimed_and_repeats_are_timed_on_both_clocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock.wall)
    monkeypatch.setattr(timing.time, "process_time", lambda: clock.cpu)
    costs = iter([(9.0, 8.0), (5.0, 5.0), (1.0, 0.5), (2.0, 1.5), (3.0, 2.5)])
    calls = []

    def step() -> int:
        wall, cpu = next(costs)
        clock.spend(wall, cpu)
        calls.append(wall)
        return len(calls)

    t = time_call(step, warmup=2, repeats=3)
    assert calls == [9.0, 5.0, 1.0, 2.0, 3.0]
    assert t.first_s == 9.0  # the first warm-up call only (compilation lands there)
    assert t.wall_s == [1.0, 2.0, 3.0] and t.cpu_s == [0.5, 1.5, 2.5]
    assert (t.median_wall, t.median_cpu) == (2.0, 1.5)
    assert t.result == 5  # the last call's value


def test_sync_is_timed_and_before_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock.wall)
    monkeypatch.setattr(timing.time, "process_time", lambda: clock.cpu)
    t = time_call(
        lambda: clock.spend(1.0, 1.0),
        warmup=0,
        repeats=2,
        sync=lambda: clock.spend(0.25, 0.0),  # waiting for a device: wall time only
        before=lambda: clock.spend(100.0, 100.0),  # resetting counters: not timed
    )
    assert t.first_s is None
    assert t.wall_s == [1.25, 1.25] and t.cpu_s == [1.0, 1.0]


def test_real_clocks_measure_a_sleep() -> None:
    import time

    t = time_call(lambda: time.sleep(0.01), warmup=1, repeats=2)
    assert all(w >= 0.01 for w in t.wall_s)
    assert all(c < 0.01 for c in t.cpu_s)  # sleeping uses no CPU

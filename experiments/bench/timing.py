"""The one timing loop of the benchmarks: untimed warm-up calls, then timed repeats on the wall
clock and the process CPU clock.

Usage::

    from bench.timing import time_call

    t = time_call(step, warmup=3, repeats=10, sync=lambda: wait_for_device(device))
    t.first_s, t.wall_s, t.cpu_s, t.median_wall, t.median_cpu, t.result

`torch.utils.benchmark.Timer` measures a statement's wall time only and picks its own number of
runs; the benchmarks here also record process CPU seconds (the honest clock on a shared
machine), the first call's seconds (compilation) and the last call's result, so they share this.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Timing:
    """Seconds of each timed call (`wall_s`, `cpu_s`), of the first warm-up call (`first_s`,
    None without warm-up) and the value the last call returned."""

    wall_s: list[float]
    cpu_s: list[float]
    first_s: float | None = None
    result: Any = None

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_s)


def time_call(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
    before: Callable[[], None] | None = None,
) -> Timing:
    """Call `fn` `warmup` times untimed (the first one's wall seconds kept: it holds one-off
    costs such as compilation), then `repeats` times timed.

    Args:
        fn: the work to time (a training step, a solve).
        warmup: untimed calls first (0: none).
        repeats: timed calls.
        sync: called after each call inside the timing (e.g. a device synchronisation, so
            that kernels are timed rather than their launch).
        before: called before each timed call, outside the timing (e.g. resetting counters).

    Returns:
        The Timing.
    """
    result, first = None, None
    for i in range(warmup):
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        if i == 0:
            first = time.perf_counter() - start
    wall, cpu = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        if sync is not None:
            sync()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return Timing(wall_s=wall, cpu_s=cpu, first_s=first, result=result)

"""The record of `experiments/bench_speed.py`: `bench/bench_speed.json`."""

from __future__ import annotations

from dataclasses import field

from odelab.records import schema

SpeedBench = schema(
    "SpeedBench",
    "`bench/bench_speed.json` (experiments/bench_speed.py); each part present unless it was "
    "skipped (`bench_speed.py --skip <part>`).",
    (dict, "device", field(default_factory=dict)),
    (int | None, "threads", None),
    (str, "settings", ""),
    (bool, "cuda", False),
    (list[float] | None, "load_average", None),
    (float | None, "wall_s", None),
    (dict | None, "host_reads overhead per_sample compile gpu", None),
)

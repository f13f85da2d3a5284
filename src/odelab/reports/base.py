"""Build reproduction reports from the local run folders of a sweep.

A reproduction names the sweep that reproduces one paper result at a budget
(`quick` to check the pipeline in minutes, `paper` for the published recipe)
and a function that turns the finished jobs into markdown. Everything is read
from `<sweep dir>/<job>/metrics.json` and `.hydra/overrides.yaml`, written by
every run, so no logger or network is needed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class JobResult:
    """One finished (or failed) job of a reproduction sweep."""

    num: int
    output_dir: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    seconds: float | None = None  # wall time, from the sweep's job record

    @property
    def ok(self) -> bool:
        return bool(self.metrics)


@dataclass(frozen=True)
class Reproduction:
    """How to reproduce one result and report it.

    Args:
        name: the make target suffix (`make reproduce-<name>`).
        title: what is reproduced (paper, table or figure).
        budgets: budget name -> `run.py` overrides of the sweep (`-m` is added).
        build: turns the sweep's jobs into the markdown report.
    """

    name: str
    title: str
    budgets: dict[str, list[str]]
    build: Callable[[list[JobResult], str, Path], str]
    notes: dict[str, str] = field(default_factory=dict)


def load_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job folder of a sweep with its overrides and final metrics (empty if it failed)."""
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        record_file = job_dir / "job.json"
        seconds = json.loads(record_file.read_text()).get("seconds") if record_file.is_file() else None
        pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
        jobs.append(JobResult(int(job_dir.name), job_dir, pairs, metrics, seconds))
    return jobs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def fmt_mean_std(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.{digits - 1}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

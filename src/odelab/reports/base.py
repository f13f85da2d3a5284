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
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from odelab.hydra_setup import repo_root


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
        budgets: budget name -> the sweeps it runs, each a list of `run.py` overrides
            (`-m` is added). Several sweeps cover runs whose settings do not form one
            grid (e.g. a baseline that differs from the model in two keys at once).
        build: turns the jobs of all the sweeps into the markdown report.
    """

    name: str
    title: str
    budgets: dict[str, list[list[str]]]
    build: Callable[[list[JobResult], str, Path], str]
    notes: dict[str, str] = field(default_factory=dict)


def load_sweeps(budget_dir: Path) -> list[JobResult]:
    """The jobs of every sweep of one budget (`<budget_dir>/<sweep number>/<job>`), in order."""
    sweeps = sorted((p for p in budget_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [job for sweep in sweeps for job in load_jobs(sweep)]


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


def fmt_mean_std(values: Sequence[float], digits: int = 3, spec: str | None = None) -> str:
    """`mean ± std` (`digits` significant, or the format `spec` for both); one value alone."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    mean_spec, std_spec = (spec, spec) if spec else (f".{digits}g", f".{digits - 1}g")
    if not spec and abs(mean) >= 10**digits:  # whole numbers (NFE, counts): no exponent
        mean_spec, std_spec = ".0f", ".0f"
    if sum(v is not None and math.isfinite(v) for v in values) == 1:
        return f"{mean:{mean_spec}}"
    return f"{mean:{mean_spec}} ± {std:{std_spec}}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_config(job: JobResult) -> DictConfig | None:
    """The resolved config the job ran with (Hydra saves it in the run folder)."""
    path = job.output_dir / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def device_label(jobs: Sequence[JobResult]) -> str:
    """The hardware the jobs ran on, from the `device.json` each run writes."""
    seen = []
    for job in jobs:
        path = job.output_dir / "device.json"
        if path.is_file():
            info = json.loads(path.read_text())
            threads = f", {info['torch_threads']} torch thread(s)" if info.get("type") == "cpu" else ""
            label = f"{info.get('type', '?').upper()} ({info.get('name', '?')}{threads}), torch {info.get('torch', '?')}"
            if label not in seen:
                seen.append(label)
    return "; ".join(seen) or "unknown (no device.json in the run folders)"


def relative_path(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (reports stay portable)."""
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def copy_plots(job: JobResult, report_dir: Path, prefix: str = "") -> list[Path]:
    """Copy the PNG plots of one job beside the report (names prefixed to keep jobs apart)."""
    source = job.output_dir / "plots"
    if not source.is_dir():
        return []
    report_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(png, report_dir / f"{prefix}{png.name}")) for png in sorted(source.glob("*.png"))]


def runs_section(done: Sequence[tuple[str, Path]], failed: Sequence[JobResult]) -> list[str]:
    """The closing `## Runs` list: a label and folder per finished run, then the failed jobs."""
    lines = ["## Runs", ""]
    lines += [f"- {label}: `{relative_path(path)}`" for label, path in done]
    lines += [f"- failed: `{relative_path(j.output_dir)}` ({j.overrides})" for j in failed]
    return [*lines, ""]

"""Build reproduction reports from the local run folders of a sweep.

A reproduction names the sweep that reproduces one paper result at a budget
(`quick` to check the pipeline in minutes, `paper` for the published recipe)
and a function that turns the finished jobs into markdown. Everything is read
from `<sweep dir>/<job>/metrics.json` and `.hydra/overrides.yaml`, written by
every run, so no logger or network is needed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from odelab.harness import QUIET
from odelab.hydra_setup import CONFIG_DIR, repo_root
from odelab.reports.stats import Comparison, compare
from odelab.runs import Run, load_run
from odelab.tables import fmt_mean_std, markdown_table, mean_std

# Every reproduction run logs to CSV (the per-epoch history its report reads), quietly.
RECORDED = ["logger=csv", *QUIET]

__all__ = [
    "RECORDED",
    "by_seed",
    "conf_budgets",
    "conf_tags",
    "paired",
    "JobResult",
    "Jobs",
    "Reproduction",
    "copy_plots",
    "device_label",
    "fmt_mean_std",
    "load_jobs",
    "load_sweeps",
    "markdown_table",
    "mean_std",
    "relative_path",
    "run_config",
    "runs_section",
]


@dataclass
class JobResult:
    """One finished (or failed) job of a reproduction sweep, read by `odelab.runs.load_run`."""

    num: int
    run: Run

    @property
    def output_dir(self) -> Path:
        return self.run.path

    @property
    def overrides(self) -> dict[str, str]:
        return self.run.override_map

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.metrics

    @property
    def seconds(self) -> float | None:
        """Wall time, from the sweep's job record."""
        return self.run.seconds

    @property
    def ok(self) -> bool:
        return self.run.ok


class Jobs(list):
    """The jobs of a budget's sweeps, and the benchmark records (`bench/<name>.json`) by them."""

    def __init__(self, jobs: Sequence[JobResult] = (), bench: dict[str, Any] | None = None):
        super().__init__(jobs)
        self.bench: dict[str, Any] = bench or {}


@dataclass(frozen=True)
class Reproduction:
    """How to reproduce one result and report it.

    Args:
        name: the make target suffix (`make reproduce-<name>`).
        title: what is reproduced (paper, table or figure).
        budgets: budget name -> the sweeps it runs, each a list of `run.py` overrides
            (`-m` is added). Several sweeps cover runs whose settings do not form one
            grid (e.g. a baseline that differs from the model in two keys at once).
        build: turns the jobs of all the sweeps (a `Jobs` list, whose `.bench` holds the
            benchmark records) into the markdown report, reading nothing but those records.
        benchmarks: budget name -> commands (argument lists run with this Python from the
            repository root) that each write `<bench dir>/<name>.json`; `{bench}` in an
            argument is replaced by that folder, `{runs}` by the folder of the budget's sweeps.
    """

    name: str
    title: str
    budgets: dict[str, list[list[str]]]
    build: Callable[[Jobs, str, Path], str]
    notes: dict[str, str] = field(default_factory=dict)
    benchmarks: dict[str, list[list[str]]] = field(default_factory=dict)

    @classmethod
    def from_conf(cls, name: str, title: str, build: Callable[[Jobs, str, Path], str]):
        """The reproduction whose budgets and benchmarks are `conf/reproduce/<name>.yaml`."""
        sweeps, benchmarks = conf_budgets(name)
        return cls(name, title, sweeps, build, benchmarks=benchmarks)


def conf_budgets(name: str) -> tuple[dict[str, list[list[str]]], dict[str, list[list[str]]]]:
    """(sweeps, benchmarks) of each budget of reproduction `name` (`conf/reproduce/<name>.yaml`).

    Every sweep gets `RECORDED` appended: its runs log the history the report reads.
    """
    path = CONFIG_DIR / "reproduce" / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    sweeps = {
        b: [[*map(str, s), *RECORDED] for s in v.get("sweeps") or []] for b, v in spec.items()
    }
    benchmarks = {
        b: [list(map(str, c)) for c in v.get("benchmarks") or []] for b, v in spec.items()
    }
    return sweeps, benchmarks


def conf_tags(name: str) -> dict[str, list[str]]:
    """The section tag of each sweep of each budget of reproduction `name`: the budget's
    `tags` list in `conf/reproduce/<name>.yaml`, one per sweep in order (a report groups its
    sections by these rather than guessing them from overrides). A budget without `tags` maps
    to an empty list.

    Raises:
        ConfigError: a budget's `tags` is not one string per sweep.
    """
    from odelab.errors import ConfigError

    path = CONFIG_DIR / "reproduce" / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    out = {}
    for budget, entry in spec.items():
        tags = [str(t) for t in entry.get("tags") or []]
        if tags and len(tags) != len(entry.get("sweeps") or []):
            raise ConfigError(
                f"{path}: {budget}.tags has {len(tags)} entries for "
                f"{len(entry.get('sweeps') or [])} sweeps: give one tag per sweep"
            )
        out[budget] = tags
    return out


def planned_jobs(sweeps: Sequence[Sequence[str]]) -> int:
    """How many jobs `sweeps` (each a multirun's overrides, as in `conf_budgets`) launch:
    per sweep, the product of its sweep overrides' lengths (`seed=0,1,2` is 3), read by
    Hydra's own override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    total = 0
    for sweep in sweeps:
        count = 1
        for override in parser.parse_overrides(list(sweep)):
            if override.is_sweep_override():
                count *= len(list(override.sweep_iterator()))
        total += count
    return total


def load_sweeps(budget_dir: Path) -> Jobs:
    """The jobs of every sweep of one budget (`<budget_dir>/<sweep number>/<job>`), in order,
    with the benchmark records in `<budget_dir>/bench/*.json`."""
    sweeps = sorted(
        (p for p in budget_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    bench_dir = budget_dir / "bench"
    bench = {p.stem: json.loads(p.read_text()) for p in sorted(bench_dir.glob("*.json"))}
    return Jobs([job for sweep in sweeps for job in load_jobs(sweep)], bench)


def load_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job folder of a sweep (failed ones have no metrics)."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [JobResult(int(p.name), load_run(p)) for p in jobs]


def by_seed(jobs: Sequence[JobResult], key: str, scale: float = 1.0) -> dict[str, float]:
    """`metrics[key] * scale` of each job that has it, keyed by the job's seed."""
    out = {}
    for job in jobs:
        value = job.metrics.get(key)
        if value is not None:
            seed = job.overrides.get("seed") or str(
                job.run.config.get("seed", 0) if job.run.config else 0
            )
            out[seed] = scale * value
    return out


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[list[float], list[float]]:
    """The values of `a` and `b` on the seeds both have, in one order (for paired comparisons)."""
    seeds = sorted(set(a) & set(b), key=lambda s: (len(s), s))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def compare_jobs(
    a_jobs: Sequence[JobResult],
    b_jobs: Sequence[JobResult],
    key: str,
    *,
    a_name: str,
    b_name: str,
    metric: str,
    higher_is_better: bool,
    scale: float = 1.0,
) -> Comparison:
    """`metrics[key] * scale` of two groups of runs compared paired over the seeds both have."""
    a, b = paired(by_seed(a_jobs, key, scale), by_seed(b_jobs, key, scale))
    return compare(
        a, b, a_name=a_name, b_name=b_name, metric=metric, higher_is_better=higher_is_better
    )


def run_config(job: JobResult) -> DictConfig | None:
    """The resolved config the job ran with (Hydra saves it in the run folder)."""
    return job.run.config


def device_text(info: dict[str, Any]) -> str:
    """One line for a `device.json` record: kind, name, CPU threads, torch version."""
    threads = f", {info['torch_threads']} torch thread(s)" if info.get("type") == "cpu" else ""
    kind, name = info.get("type", "?").upper(), info.get("name", "?")
    return f"{kind} ({name}{threads}), torch {info.get('torch', '?')}"


def device_label(jobs: Sequence[JobResult], extra: Sequence[dict[str, Any]] = ()) -> str:
    """The hardware the jobs ran on, from the `device.json` each run writes (and the device
    records of benchmarks, `extra`)."""
    seen: list[str] = []
    infos = [
        json.loads(path.read_text())
        for path in (job.output_dir / "device.json" for job in jobs)
        if path.is_file()
    ]
    for info in [*infos, *extra]:
        label = device_text(info)
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
    return [
        Path(shutil.copy2(png, report_dir / f"{prefix}{png.name}"))
        for png in sorted(source.glob("*.png"))
    ]


def runs_section(done: Sequence[tuple[str, Path]], failed: Sequence[JobResult]) -> list[str]:
    """The closing `## Runs` list: a label and folder per finished run, then the failed jobs."""
    lines = ["## Runs", ""]
    lines += [f"- {label}: `{relative_path(path)}`" for label, path in done]
    lines += [f"- failed: `{relative_path(j.output_dir)}` ({j.overrides})" for j in failed]
    return [*lines, ""]


def report_path(name: str, budget: str, reports: Path | None = None) -> Path:
    return (reports or repo_root() / "experiments" / "reports") / f"{name}_{budget}.md"


def records_dir(name: str, budget: str, reports: Path | None = None) -> Path:
    return report_path(name, budget, reports).with_suffix("") / "records"


def part_record(repro: Reproduction, budget: str, i: int, reports: Path | None = None) -> Path:
    """Where sweep `i` of `budget` is stored: its own records folder, or else that of another
    budget running the same overrides (a part of a combined budget such as `cpu`, whose
    records are read in place rather than stored twice)."""
    own = records_dir(repro.name, budget, reports) / str(i)
    if own.is_dir():
        return own
    sweep = repro.budgets[budget][i]
    for part, sweeps in repro.budgets.items():
        for j, other in enumerate(sweeps):
            folder = records_dir(repro.name, part, reports) / str(j)
            if part != budget and other == sweep and folder.is_dir():
                return folder
    return own

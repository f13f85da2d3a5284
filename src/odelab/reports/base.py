"""Reproductions and the jobs their reports read.

A `Reproduction` names the sweeps that reproduce one paper result at each budget (declared in
`conf/reproduce/<name>.yaml`) and a function that turns the finished jobs into markdown.
Everything is read from the run folders (`metrics.json`, `.hydra/overrides.yaml`, ...), so no
logger or network is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odelab.errors import ConfigError
from odelab.harness import QUIET
from odelab.hydra_setup import CONFIG_DIR, repo_root
from odelab.runs import Run, load_run

# Every reproduction run logs to CSV (the per-epoch history its report reads), quietly, and
# re-tests its ODE blocks with finer solvers after its test epoch (the "Is it an ODE?"
# section every report with an ODE model closes with; conf/callbacks/ode_validity.yaml).
VALIDITY = "+callbacks@callbacks.ode_validity=ode_validity"
RECORDED = ["logger=csv", *QUIET, VALIDITY]


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


def _spec(name: str) -> tuple[Path, dict[str, Any]]:
    path = CONFIG_DIR / "reproduce" / f"{name}.yaml"
    return path, yaml.safe_load(path.read_text())


def conf_budgets(name: str) -> tuple[dict[str, list[list[str]]], dict[str, list[list[str]]]]:
    """(sweeps, benchmarks) of each budget of reproduction `name` (`conf/reproduce/<name>.yaml`).

    Every sweep gets `RECORDED` appended: its runs log the history the report reads and
    the finer-solver checks.
    """
    spec = _spec(name)[1].items()
    sweeps = {b: [[*map(str, s), *RECORDED] for s in v.get("sweeps") or []] for b, v in spec}
    return sweeps, {b: [list(map(str, c)) for c in v.get("benchmarks") or []] for b, v in spec}


def conf_tags(name: str) -> dict[str, list[str]]:
    """Budget -> the section tag of each of its sweeps (its `tags` in
    `conf/reproduce/<name>.yaml`, one per sweep, or empty); a report groups its sections by
    these. Raises ConfigError when a budget's `tags` is not one per sweep."""
    path, spec = _spec(name)
    out = {}
    for budget, entry in spec.items():
        tags, sweeps = [str(t) for t in entry.get("tags") or []], entry.get("sweeps") or []
        if tags and len(tags) != len(sweeps):
            raise ConfigError(
                f"{path}: {budget}.tags has {len(tags)} entries for "
                f"{len(sweeps)} sweeps: give one tag per sweep"
            )
        out[budget] = tags
    return out


def planned_jobs(sweeps: Sequence[Sequence[str]]) -> int:
    """How many jobs `sweeps` (each a multirun's overrides, as in `conf_budgets`) launch:
    per sweep, the product of its sweep overrides' lengths (`seed=0,1,2` is 3), read by
    Hydra's own override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return sum(
        math.prod(
            len(list(o.sweep_iterator()))
            for o in parser.parse_overrides(list(sweep))
            if o.is_sweep_override()
        )
        for sweep in sweeps
    )


def _numbered(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def load_sweeps(budget_dir: Path) -> Jobs:
    """The jobs of every sweep of one budget (`<budget_dir>/<sweep number>/<job>`), in order,
    with the benchmark records in `<budget_dir>/bench/*.json`."""
    bench_dir = budget_dir / "bench"
    bench = {p.stem: json.loads(p.read_text()) for p in sorted(bench_dir.glob("*.json"))}
    return Jobs([job for sweep in _numbered(budget_dir) for job in load_jobs(sweep)], bench)


def load_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job folder of a sweep (failed ones have no metrics)."""
    return [JobResult(int(p.name), load_run(p)) for p in _numbered(sweep_dir)]


def device_text(info: dict[str, Any]) -> str:
    """One line for a `device.json` record: kind, name, CPU threads, torch version."""
    threads = f", {info['torch_threads']} torch thread(s)" if info.get("type") == "cpu" else ""
    kind, name = info.get("type", "?").upper(), info.get("name", "?")
    return f"{kind} ({name}{threads}), torch {info.get('torch', '?')}"


def relative_path(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (reports stay portable)."""
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def record_plots(job: JobResult) -> list[str]:
    """The PNG plots of one job where its record stores them, as linked from a report beside
    its folder in experiments/reports (`<report>/records/<sweep>/<job>/plots/<name>.png`):
    read in place, never copied beside the report."""
    prefix = "experiments/reports/"
    links = (relative_path(png) for png in sorted((job.output_dir / "plots").glob("*.png")))
    return [text.removeprefix(prefix) for text in links]


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

"""Report for the spiral dynamics recovery (Chen et al. 2018, torchdiffeq `ode_demo`).

The runs become one pandas frame; the spiral claims of `conf/claims/chen2018.yaml` are judged
from it and from the benchmark record (`bench/bench_spiral.json`, typed as `SpiralBench`) into
`claims.json` beside the report; `templates/spiral.md.j2` presents them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import odelab.reports.claims as cl
import odelab.reports.parts as parts
from odelab.reports.base import JobResult, Jobs, Reproduction, record_plots
from odelab.reports.render import render
from odelab.reports.speed import OVERHEAD_TARGET, step_ratios  # defined with the speed report

METRICS = {
    "test/traj_mae": "mean abs trajectory error on [0, 25]",
    "test/extrap_mae": "mean abs error on (25, 30] (extrapolation)",
    "test/field_rel_err": "relative RMS error of the learned field",
    "test/nfe_forward": "function evaluations of one evaluation solve",
}
CLAIMS = [c for c in cl.load_claims("chen2018").values() if c.report == "spiral"]


@dataclass
class RecoveryRun:
    """One seed of one side of the same-wall-time comparison."""

    seed: int
    error: float
    seconds: float
    steps: float


@dataclass
class RecoveryRuns:
    baseline: list[RecoveryRun]
    odelab: list[RecoveryRun]


@dataclass
class Recovery:
    """The ode_demo recipe against odelab's, capped at the reference's wall time."""

    baseline_iterations: int
    runs: RecoveryRuns


@dataclass
class Overhead:
    """Training steps timed on each side (`ms_per_step.<side>.seconds`: one per repeat)."""

    steps: int
    warmup: int
    repeats: int
    max_weight_difference: float
    ms_per_step: dict


@dataclass
class SpiralBench:
    """`bench/bench_spiral.json` (experiments/bench_spiral.py)."""

    recovery: Recovery | None = None
    overhead: Overhead | None = None
    device: dict = field(default_factory=dict)
    threads: int | None = None
    settings: str = ""


def overhead_summary(record: Overhead) -> dict[str, Any]:
    """The step times per repeat (odelab, the plain loop, their ratio) and the ratios of medians
    with their per-repeat range (`step_ratios`), against `OVERHEAD_TARGET`."""
    times, ratios = step_ratios(record.ms_per_step)
    rows = times.assign(ratio=times["odelab"] / times["plain"]).reset_index(names="repeat")
    return {"rows": rows.to_dict("records"), "ratio": ratios, "target": OVERHEAD_TARGET}


def verdicts(frame: pd.DataFrame, budget: str, bench: SpiralBench | None) -> list[cl.Verdict]:
    """The spiral claims judged on this budget (or not testable, with why)."""
    runs = bench.recovery.runs if bench and bench.recovery else None

    def measure(claim: cl.Claim) -> tuple | None:
        if claim.kind != "contrast":
            column = "metric.test/field_rel_err"
            return (frame.loc[frame["ok"], column] if column in frame else [],)
        if runs is None:
            return None
        ours, ref = (pd.Series({r.seed: r.error for r in s}) for s in (runs.odelab, runs.baseline))
        return ours.align(ref, join="inner")  # paired by seed

    return parts.judge(CLAIMS, budget, measure)


def _ours(job: JobResult | None, bench: SpiralBench | None) -> dict[str, str] | None:
    """Our recipe's settings, from the first finished run's config."""
    cfg = job.run.config if job else None
    if cfg is None:
        return None
    solver, opt, device = cfg.solver, cfg.model.optimizer, job.run.device
    schedule = cfg.model.get("scheduler")
    decay = f", {schedule._target_.rsplit('.', 1)[-1]}" if schedule else ""
    threads = f"; benchmark {bench.threads} thread(s)" if bench and bench.threads else ""
    return {
        "Iterations": str(cfg.trainer.max_epochs * cfg.data.batches_per_epoch),
        "Optimizer": f"{opt._target_.rsplit('.', 1)[-1]} lr {opt.lr:g}{decay}",
        "Windows": f"{cfg.data.batch_size} windows of {cfg.data.batch_time} steps",
        "Solver": f"{solver.method} rtol {solver.rtol:g}, atol {solver.atol:g}",
        "Device": f"CPU ({device.get('name', '?')}), {device.get('torch_threads', '?')} thread(s)"
        + threads,
    }


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, ours per seed, the reference recipe, the overhead and the plots."""
    frame = parts.report_frame(jobs, "spiral", budget)
    bench = parts.bench_record(jobs, "bench_spiral", SpiralBench)
    judged = verdicts(frame, budget, bench)
    cl.write_claims(report_dir / "claims.json", judged)
    first = next((j for j in jobs if j.ok), None)
    # The fitted trajectories first: the summary's figure (the others go to the plots section),
    # linked where the run's record stores them.
    plots = record_plots(first) if first else []
    plots.sort(key=lambda p: not p.endswith("/trajectories.png"))
    overhead = bench.overhead if bench else None
    return render(
        "spiral.md.j2",
        budget=budget,
        headline=judged,
        labels={c.id: c.text for c in CLAIMS},
        plots=plots,
        plot_seed=first.overrides.get("seed", "0") if first else None,
        differs=parts.differs("chen2018", "spiral", _ours(first, bench)),
        metrics=METRICS,
        summary=frame[frame["ok"]]
        .reindex(columns=[f"metric.{k}" for k in METRICS])
        .agg(["mean", "std"]),
        runs=frame.to_dict("records"),
        recovery=bench.recovery if bench else None,
        overhead=overhead,
        overhead_summary=overhead_summary(overhead) if overhead else None,
    )


SPIRAL = Reproduction.from_conf(
    "spiral", "Spiral dynamics recovery (Chen et al. 2018, torchdiffeq ode_demo)", build_report
)

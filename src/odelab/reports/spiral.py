"""Report for the spiral dynamics recovery (Chen et al. 2018, torchdiffeq `ode_demo`).

The runs become one pandas frame; the spiral claims of `conf/claims/chen2018.yaml` are judged
from it and from the benchmark record (`bench/bench_spiral.json`, typed as `SpiralBench`),
written to `claims.json` beside the report, and presented by `templates/spiral.md.j2`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odelab.reports.base import (
    Jobs,
    Reproduction,
    conf_tags,
    copy_plots,
    relative_path,
)
from odelab.reports.claims import (
    Verdict,
    evaluate,
    load_claims,
    not_testable,
    paper_settings,
    write_claims,
)
from odelab.reports.frame import runs_frame
from odelab.reports.records import load_record
from odelab.reports.render import render
from odelab.reports.speed import OVERHEAD_TARGET  # defined once, with the speed report

METRICS = {
    "test/traj_mae": "mean abs trajectory error on [0, 25]",
    "test/extrap_mae": "mean abs error on (25, 30] (extrapolation)",
    "test/field_rel_err": "relative RMS error of the learned field",
    "test/nfe_forward": "function evaluations of one evaluation solve",
}

TAGS = conf_tags("spiral")


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
    """Ratios of median step times (odelab / plain, and the bare-Lightning floor where the
    record has it), per repeat and overall, against `OVERHEAD_TARGET`."""
    ms = record.ms_per_step
    plain = ms["plain"]["seconds"]

    def ratios(side: str) -> dict[str, Any]:
        times = ms[side]["seconds"]
        per = [t / p for t, p in zip(times, plain, strict=True)]
        return {
            "ratio": statistics.median(times) / statistics.median(plain),
            "low": min(per),
            "high": max(per),
            "n": len(per),
        }

    rows = [
        {"repeat": i, "plain": p, "odelab": o, "ratio": o / p}
        for i, (p, o) in enumerate(zip(plain, ms["odelab"]["seconds"], strict=True))
    ]
    floor = ratios("lightning") if "lightning" in ms else None
    share = (
        statistics.median(ms["odelab"]["seconds"]) / statistics.median(ms["lightning"]["seconds"])
        if floor
        else None
    )
    return {
        "rows": rows,
        "odelab": ratios("odelab"),
        "floor": floor,
        "share": share,
        "target": OVERHEAD_TARGET,
    }


def verdicts(frame: Any, budget: str, bench: SpiralBench | None) -> list[Verdict]:
    """The spiral claims of chen2018.yaml judged on this budget (or not testable, with why)."""
    out = []
    for claim in (c for c in load_claims("chen2018").values() if c.report == "spiral"):
        recovery = bench.recovery if bench else None
        if budget not in claim.budgets:
            testing = ", ".join(f"`{b}`" for b in claim.budgets)
            out.append(not_testable(claim, claim.reason or f"only budgets {testing} test it"))
        elif claim.kind == "contrast":
            if recovery is None:
                out.append(not_testable(claim, claim.reason))
                continue
            ours = {r.seed: r.error for r in recovery.runs.odelab}
            ref = {r.seed: r.error for r in recovery.runs.baseline}
            seeds = sorted(set(ours) & set(ref))
            out.append(evaluate(claim, [ours[s] for s in seeds], [ref[s] for s in seeds]))
        else:
            column = "metric.test/field_rel_err"
            values = frame.loc[frame["ok"], column].tolist() if column in frame else []
            out.append(evaluate(claim, values))
    return out


def _differs(done: list, bench: SpiralBench | None) -> list[tuple[str, str, str]]:
    """(setting, reference recipe, ours) from the first run's config."""
    if not done:
        return []
    cfg = done[0].run.config
    if cfg is None:
        missing = "n/a (run config not found)"
        return [(k, v, missing) for k, v in paper_settings("chen2018", "spiral").items()]
    solver, optimizer = cfg.solver, cfg.model.optimizer
    schedule = cfg.model.get("scheduler")
    decay = f", {schedule._target_.rsplit('.', 1)[-1]}" if schedule else ""
    threads = bench.threads if bench and bench.threads else None
    ours = {
        "Iterations": f"{cfg.trainer.max_epochs * cfg.data.batches_per_epoch}",
        "Optimizer": f"{optimizer._target_.rsplit('.', 1)[-1]} lr {optimizer.lr:g}{decay}",
        "Windows": f"{cfg.data.batch_size} windows of {cfg.data.batch_time} steps",
        "Solver": f"{solver.method} rtol {solver.rtol:g}, atol {solver.atol:g}",
        "Device": f"CPU ({done[0].run.device.get('name', '?')}), "
        f"{done[0].run.device.get('torch_threads', '?')} thread(s)"
        + (f"; benchmark {threads} thread(s)" if threads else ""),
    }
    return [(k, v, ours[k]) for k, v in paper_settings("chen2018", "spiral").items()]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, ours per seed, the reference recipe, the overhead and the plots."""
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    raw = getattr(jobs, "bench", {}).get("bench_spiral")
    bench = load_record("bench/bench_spiral.json", SpiralBench, data=raw) if raw else None
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget, bench)
    write_claims(report_dir / "claims.json", judged)
    done = [j for j in jobs if j.ok]
    ok = frame[frame["ok"]] if len(frame) else frame
    summary = [
        {
            "key": key,
            "meaning": meaning,
            "mean": ok[f"metric.{key}"].mean() if f"metric.{key}" in ok else None,
            "std": ok[f"metric.{key}"].std() if f"metric.{key}" in ok else None,
        }
        for key, meaning in METRICS.items()
    ]
    plots = copy_plots(done[0], report_dir) if done else []
    # The summary's figure: the fitted trajectories (the others go to the plots section).
    plots.sort(key=lambda p: p.stem != "trajectories")
    recovery = bench.recovery if bench else None
    return render(
        "spiral.md.j2",
        budget=budget,
        headline=judged,
        labels={c.id: c.text for c in load_claims("chen2018").values()},
        figure=f"{report_dir.name}/{plots[0].name}" if plots else None,
        plots=[f"{report_dir.name}/{p.name}" for p in plots[1:]],
        plot_seed=done[0].overrides.get("seed", "0") if done else None,
        differs=_differs(done, bench),
        summary=summary,
        n=len(done),
        metrics=list(METRICS),
        seeds=[
            {
                "seed": j.overrides.get("seed", "0"),
                "cells": [j.metrics.get(k) for k in METRICS],
                "seconds": j.seconds,
                "path": relative_path(j.output_dir),
            }
            for j in done
        ],
        failed=[
            (j.overrides.get("seed", "0"), relative_path(j.output_dir)) for j in jobs if not j.ok
        ],
        recovery=list(zip(recovery.runs.baseline, recovery.runs.odelab, strict=True))
        if recovery
        else [],
        iterations=recovery.baseline_iterations if recovery else None,
        overhead=bench.overhead if bench else None,
        overhead_summary=overhead_summary(bench.overhead) if bench and bench.overhead else None,
    )


SPIRAL = Reproduction.from_conf(
    "spiral", "Spiral dynamics recovery (Chen et al. 2018, torchdiffeq ode_demo)", build_report
)

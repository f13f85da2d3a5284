"""Report for Table 1 and Figure 3 of Chen et al. 2018: MLP, ResNet, RK-Net and ODE-Net on MNIST
(or Fashion-MNIST), with the adjoint memory and solver tolerance studies.

The runs become one pandas frame (`frame.runs_frame`); the claims of `conf/claims/chen2018.yaml`
(report `mnist`) are judged from it and from the benchmark records, written to `claims.json`
beside the report, and presented by `templates/mnist.md.j2`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from odelab.reports.base import Jobs, Reproduction, conf_tags, relative_path
from odelab.reports.claims import (
    Claim,
    Verdict,
    evaluate,
    load_claims,
    not_testable,
    paper_settings,
    write_claims,
)
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.mnist_table import (
    ORDER,
    PLATEAU_TOLERANCE,
    MemoryRecord,
    ToleranceRecord,
    data_sizes,
    memory_figure,
    model_label,
    nfe_figure,
    plateau_state,
    solve_label,
    tolerance_figure,
    validation_figure,
    validation_images,
)
from odelab.reports.records import load_record
from odelab.reports.render import render
from odelab.reports.stats import resolvable
from odelab.runs import Run, median

TAGS = conf_tags("mnist")
# The arms of the Table 1 claims, by the model label of a run.
ARMS = {"odenet": "ODE-Net", "resnet": "ResNet", "rknet": "RK-Net", "mlp": "1-layer MLP"}
HEADLINE_SECTIONS = ("table1", "figure3", "tolerance", "memory")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _quarters(values: list[float]) -> list[float]:
    """Means of the four consecutive quarters of a series (fewer parts when it is short)."""
    parts = min(4, len(values))
    if parts == 0:
        return []
    bounds = [round(i * len(values) / parts) for i in range(parts + 1)]
    return [_mean(values[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _run_columns(run: Run) -> dict[str, Any]:
    """Per-run values the frame does not hold: the model, series summaries, data and schedule."""
    _, step_times = run.series("train/step_time")
    _, forward = run.series("train/nfe_forward")
    _, backward = run.series("train/nfe_backward")
    quarters = _quarters(forward)
    dataset, n_train, n_test = data_sizes(run)
    scheduler = run.config.model.get("scheduler")
    return {
        "model": model_label(run),
        "step_time": median(step_times) if step_times else math.nan,
        "nfe_fwd": _mean(forward),
        "nfe_bwd": _mean(backward) if backward else math.nan,
        "nfe_ratio": sum(backward) / sum(forward) if backward and sum(forward) else math.nan,
        "nfe_first": quarters[0] if len(quarters) == 4 else math.nan,
        "nfe_last": quarters[-1] if len(quarters) == 4 else math.nan,
        "quarters": quarters,
        "solve": solve_label(run),
        "data_size": f"{dataset}, {n_train} train / {n_test} test",
        "dataset_name": dataset,
        "epochs": run.epochs,
        "steps": run.train_steps,
        "batch": int(run.config.data.batch_size),
        "milestones": tuple(scheduler.milestones) if scheduler else (),
        "max_time": bool(run.config.trainer.get("max_time")),
        "launcher": _launcher(run),
        "threads": str(run.device.get("torch_threads", "?")),
        "cuda": run.device.get("type") == "cuda",
        "path": relative_path(run.path),
    }


def _launcher(run: Run) -> str:
    """The Hydra launcher that ran this job (its `_target_`), or '' when not recorded."""
    hydra_file = run.path / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return ""
    return str(OmegaConf.load(hydra_file).hydra.launcher.get("_target_", ""))


def mnist_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """The finished runs, one row each, with the Table 1 model and per-run summaries."""
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    frame = frame[frame["ok"]].copy() if len(frame) else frame
    ok_jobs = [j for j in jobs if j.ok]
    extra = pd.DataFrame([_run_columns(j.run) for j in ok_jobs], index=frame.index)
    frame = pd.concat([frame, extra], axis=1) if len(ok_jobs) else frame
    if "metric.test/error" in frame:
        frame["error_pct"] = 100 * frame["metric.test/error"]
    if "metric.model/params" in frame:
        frame["params_m"] = (frame["metric.model/params"] / 1e6).round(6)
    if "tag" in frame:  # Table 1 is the sweeps tagged so (conf/reproduce/mnist.yaml); a run
        frame = frame[frame["tag"].isin(["table1", ""])]  # outside a sweep folder has no tag
    return frame


def table1(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per model (Table 1 order): error mean ± std over seeds, and the first seed's
    params, memory, times and NFE (the same net at every seed)."""
    if frame.empty:
        return []
    grouped = frame.groupby("model", sort=False)
    errors = grouped["error_pct"].agg(["mean", "std", "count"])
    first = grouped.first()
    rows = []
    for model in sorted(errors.index, key=lambda m: ORDER.index(m) if m in ORDER else 9):
        row = first.loc[model]
        rows.append(
            {
                "model": model,
                "error": errors.loc[model, "mean"],
                "error_std": errors.loc[model, "std"],
                "seeds": int(errors.loc[model, "count"]),
                "params": row.get("params_m"),
                "memory": row.get("metric.train/peak_memory_mb"),
                "activations": row.get("metric.train/activations_mb"),
                "step_time": row["step_time"],
                "epoch_time": row.get("metric.train/epoch_time"),
                "nfe_fwd": row["nfe_fwd"],
                "nfe_bwd": row["nfe_bwd"],
                "test_nfe": row.get("metric.test/nfe_forward"),
                "solve": row["solve"],
            }
        )
    return rows


def _plateaus(jobs: Jobs) -> dict[str, list[str]]:
    """Per model, the plateau state of each seed's validation curve (words for the report)."""
    out: dict[str, list[str]] = {}
    for job in (j for j in jobs if j.ok):
        curve = job.run.epoch_series("val/error")
        out.setdefault(model_label(job.run), []).append(
            plateau_state(*curve, validation_images(job.run))[1]
        )
    return {m: out[m] for m in sorted(out, key=lambda m: ORDER.index(m) if m in ORDER else 9)}


def _slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y on x (NaN without two distinct x)."""
    if len(set(x)) < 2:
        return math.nan
    if len(set(y)) == 1:
        return 0.0  # exactly flat (least squares would leave rounding noise of either sign)
    return float(np.polyfit(x, y, 1)[0])


def verdicts(
    frame: pd.DataFrame,
    budget: str,
    memory: MemoryRecord | None,
    tolerance: ToleranceRecord | None,
) -> list[Verdict]:
    """Every MNIST claim of chen2018.yaml judged on this budget (or not testable, with why)."""
    claims = {
        k: c
        for paper in ("chen2018", "checks")  # checks.yaml: later literature (NFE counting)
        for k, c in load_claims(paper).items()
        if c.report == "mnist"
    }
    fashion = budget.startswith("fashion")
    frame = frame.assign(model=frame["model"].map({v: k for k, v in ARMS.items()}))

    def arm(name: str, column: str) -> pd.Series:
        return seed_values(frame, column, model=name) if column in frame else pd.Series()

    def judge(claim: Claim) -> Verdict:
        if claim.kind == "value" and claim.metric == "test error" and fashion:
            return not_testable(claim, "Fashion-MNIST: the paper's number is on MNIST")
        if budget not in claim.budgets:
            testing = ", ".join(f"`{b}`" for b in claim.budgets)
            return not_testable(claim, claim.reason or f"only budgets {testing} test it")
        if claim.section == "table1" and claim.kind == "contrast":
            a, b = arm(claim.arms[0], "error_pct").align(arm(claim.arms[1], "error_pct"), "inner")
            return evaluate(claim, list(a), list(b))
        if claim.metric == "test error":
            return evaluate(claim, list(arm("odenet", "error_pct")))
        if claim.metric == "parameters":
            return evaluate(claim, list(arm(claim.id.rsplit("_", 1)[1], "params_m")))
        if claim.id == "mnist_nfe_grows":
            return evaluate(
                claim, list(arm("odenet", "nfe_last")), list(arm("odenet", "nfe_first"))
            )
        if claim.metric == "backward / forward NFE per training step":
            return evaluate(claim, list(arm("odenet", "nfe_ratio")))
        if claim.section == "tolerance":
            if tolerance is None:
                return not_testable(claim, claim.reason)
            logs = [math.log10(r.tol) for r in tolerance.rows]
            y = [
                r.test_nfe_forward if "NFE" in claim.metric else 100 * r.test_error
                for r in tolerance.rows
            ]
            return evaluate(claim, [_slope(logs, y)])
        if claim.section == "memory":
            if memory is None:
                return not_testable(claim, claim.reason)
            return evaluate(claim, [r["adjoint_max_over_min"] for r in memory.ratios.values()])
        raise ValueError(f"claim {claim.id}: the MNIST report has no test for it")

    return [judge(c) for c in claims.values()]


def _differs(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(setting, paper, ours) for what this budget does unlike the paper (chen2018.yaml's
    `settings.mnist`)."""
    if frame.empty:
        return []
    paper = paper_settings("chen2018", "mnist")
    epochs = frame.groupby("model", sort=False)["epochs"].max()
    steps = f"{frame['steps'].max()} steps of {frame['batch'].iloc[0]}"
    reached = ", ".join(f"{m} {e}" for m, e in epochs.items()) if epochs.nunique() > 1 else ""
    milestones = "; ".join(", ".join(map(str, m)) for m in sorted(set(frame["milestones"]) - {()}))
    threads = ", ".join(frame["threads"].unique())
    device = "one GPU" if frame["cuda"].any() else f"CPU, {threads} thread(s)"
    if frame["launcher"].str.contains("joblib").any():
        device += ", runs in parallel (joblib)"
    ours = {
        "Data": "; ".join(frame["data_size"].unique()),
        "Epochs": f"{reached or epochs.iloc[0]} ({steps})",
        "LR x0.1 at": milestones,
        "Device": device,
    }
    return [(k, v, ours[k]) for k, v in paper.items() if ours[k] and ours[k] != v]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, Table 1, Figure 3, the memory and tolerance studies, what differs."""
    frame = mnist_frame(jobs, budget)
    bench = getattr(jobs, "bench", {})
    memory = (
        load_record("bench/mnist_memory.json", MemoryRecord, data=bench["mnist_memory"])
        if "mnist_memory" in bench
        else None
    )
    tolerance = (
        load_record("bench/mnist_tolerance.json", ToleranceRecord, data=bench["mnist_tolerance"])
        if "mnist_tolerance" in bench
        else None
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget, memory, tolerance) if not frame.empty else []
    write_claims(report_dir / "claims.json", judged)

    ok_runs = [j.run for j in jobs if j.ok]
    odenet = [r for r in ok_runs if model_label(r) == "ODE-Net"]
    figures = {}
    if odenet and nfe_figure(odenet[0], report_dir / "nfe.png"):
        figures["nfe"] = f"{report_dir.name}/nfe.png"
    curves: dict[str, list] = {}
    for run in ok_runs:
        curves.setdefault(model_label(run), []).append(run.epoch_series("val/error"))
    curves = {
        m: curves[m] for m in sorted(curves, key=lambda m: ORDER.index(m) if m in ORDER else 9)
    }
    if validation_figure(curves, report_dir / "validation.png"):
        figures["validation"] = f"{report_dir.name}/validation.png"
    if memory is not None:
        rows = [asdict(r) for r in memory.rows]
        title = f"ODE-Net training step, batch {memory.batch_size}, {memory.device['name']}"
        memory_figure(rows, report_dir / "mnist_memory.png", f"{title}: adjoint vs direct")
        figures["memory"] = f"{report_dir.name}/mnist_memory.png"
    if tolerance is not None:
        rows = [asdict(r) for r in tolerance.rows]
        title = f"ODE-Net trained at tol {tolerance.trained_tol:g} ({tolerance.test_images} images)"
        tolerance_figure(rows, report_dir / "mnist_tolerance.png", title)
        figures["tolerance"] = f"{report_dir.name}/mnist_tolerance.png"

    slopes = {}
    if memory is not None:
        for solver in memory.ratios:
            direct = [r for r in memory.rows if r.solver == solver and r.sensitivity == "direct"]
            slopes[solver] = _slope([r.nfe_forward for r in direct], [r.peak_mb for r in direct])
    ode = frame[frame["model"] == "ODE-Net"] if len(frame) else frame
    quarters = list(zip(ode["seed"], ode["quarters"], strict=True)) if len(ode) else []
    return render(
        "mnist.md.j2",
        budget=budget,
        fashion=budget.startswith("fashion"),
        headline=[v for v in judged if v.section in HEADLINE_SECTIONS],
        labels={c.id: c.text for p in ("chen2018", "checks") for c in load_claims(p).values()},
        by_section={s: [v for v in judged if v.section == s] for s in ("params", "nfe")},
        table=table1(frame),
        plateaus=_plateaus(jobs),
        plateau_tolerance=PLATEAU_TOLERANCE,
        unresolved=next(d for d in range(1, 64) if resolvable(d)) - 1,
        quarters=quarters,
        figures=figures,
        memory=memory,
        slopes=slopes,
        tolerance=tolerance,
        same_error=tolerance is not None and len({r.test_error for r in tolerance.rows}) == 1,
        differs=_differs(frame),
        runs=[
            (f"{model_label(j.run)}, seed {j.run.config.seed}", relative_path(j.run.path))
            for j in jobs
            if j.ok
        ],
        failed=[(relative_path(j.run.path), j.overrides) for j in jobs if not j.ok],
    )


MNIST = Reproduction.from_conf(
    "mnist", "ODE-Net vs ResNet, RK-Net and MLP on MNIST (Chen et al. 2018, Table 1)", build_report
)

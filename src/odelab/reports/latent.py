"""Report for latent ODEs on irregularly sampled series (Rubanova et al. 2019).

The latent ODE against the RNN fed the time gaps and the deterministic ODE-RNN, three seeds
each, on the noisy periodic toy data and on the yearly sunspot record (the section of each
sweep is its tag in `conf/reproduce/latent.yaml`). The runs become one pandas frame; the claims
of `conf/claims/rubanova2019.yaml` are judged from it into `claims.json` beside the report; the
union-of-times benchmark (`experiments/bench_latent.py`) is typed as `BenchLatent`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from odelab.plotting import plt
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
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.records import load_record
from odelab.reports.render import render

MODELS = {
    "latent_ode": "latent ODE (ODE-RNN encoder)",
    "rnn_baseline": "RNN with time gaps",
    "ode_rnn": "ODE-RNN",
}
DATASETS = {"periodic": "noisy periodic series (toy)", "sunspots": "yearly sunspot record"}
TAGS = conf_tags("latent")
# Per-run columns of the results table (frame column, spec); NFE and step time are the last
# epoch's means, read from the history.
COLUMNS = {
    "metric.test/interp_mse": ".3g",
    "metric.test/extrap_mse": ".3g",
    "metric.val/extrap_mse": ".3g",
    "metric.test/elbo": ".1f",
    "metric.test/iwae": ".1f",
    "nfe_fwd": ".0f",
    "nfe_bwd": ".0f",
    "step_s": ".3f",
    "wall_s": ".0f",
}


@dataclass
class UnionRow:
    """One training step solved on the union of the batch's times against once per series."""

    grid_size: int
    sensitivity: str
    batch_size: int
    union_times: int
    own_times_mean: float
    union_seconds: float
    alone_seconds: float
    union_nfe: dict
    alone_nfe: dict
    repeats: int


@dataclass
class NfeOverTraining:
    sensitivity: str
    steps: int
    step: list[int]
    decoder_forward: list[int]
    decoder_backward: list[int]
    encoder_forward: list[int]
    loss: list[float]
    seconds: list[float]


@dataclass
class BenchLatent:
    """`bench/bench_latent.json` (experiments/bench_latent.py)."""

    device: dict
    union_vs_alone: list[UnionRow]
    nfe_over_training: NfeOverTraining
    seconds: float


def latent_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """Finished runs, one row each, with the section tag as `dataset` and last-epoch NFE and
    step time."""
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    if frame.empty:
        return frame

    def last(job: Any, key: str) -> float | None:
        values = job.run.epoch_series(key)[1]
        return values[-1] if values else None

    frame["nfe_fwd"] = [last(j, "train/nfe_forward_epoch") for j in jobs]
    frame["nfe_bwd"] = [last(j, "train/nfe_backward_epoch") for j in jobs]
    frame["step_s"] = [last(j, "train/step_time_epoch") for j in jobs]
    frame["path"] = [relative_path(j.output_dir) for j in jobs]
    if "tag" not in frame:  # runs read outside a tagged budget: the data override decides
        frame["tag"] = frame["data"] if "data" in frame else "periodic"
    frame["dataset"] = frame["tag"].replace("", "periodic").fillna("periodic")
    return frame[frame["ok"]]


def results(frame: pd.DataFrame, dataset: str) -> list[dict[str, Any]]:
    """Mean and std over seeds of each table column, one row per model (in MODELS order)."""
    rows = frame[frame["dataset"] == dataset]
    columns = [c for c in COLUMNS if c in rows]
    stats = rows.groupby("experiment")[columns].agg(["mean", "std", "count"])
    out = []
    for model in (m for m in MODELS if m in stats.index):
        cells = {
            c: (stats.loc[model, (c, "mean")], stats.loc[model, (c, "std")], COLUMNS[c])
            for c in columns
        }
        out.append(
            {
                "model": MODELS[model],
                "n": int(stats.loc[model, (columns[0], "count")]),
                "cells": [cells.get(c, (None, None, ".3g")) for c in COLUMNS],
            }
        )
    return out


def verdicts(frame: pd.DataFrame, budget: str) -> list[Verdict]:
    """Every claim of rubanova2019.yaml judged on this budget, or not testable with why."""
    out = []
    for claim in load_claims("rubanova2019").values():
        if budget not in claim.budgets:
            testing = ", ".join(f"`{b}`" for b in claim.budgets) or "none yet"
            out.append(not_testable(claim, claim.reason or f"budgets that test it: {testing}"))
            continue
        column = "metric." + claim.metric.replace("test ", "test/").replace("olation MSE", "_mse")
        rows = frame[frame["dataset"] == claim.section] if len(frame) else frame
        a, b = (seed_values(rows, column, experiment=arm) for arm in claim.arms)
        a, b = a.align(b, join="inner")
        out.append(evaluate(claim, list(a), list(b)))
    return out


def bench_summary(bench: BenchLatent, report_dir: Path) -> dict[str, Any]:
    """The union-vs-alone rows, the decoder NFE at the start and end of training, and the
    figure of NFE over training."""
    train = bench.nfe_over_training
    tenth = max(1, len(train.step) // 10)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(train.step, train.decoder_forward, lw=1, label="decoder forward")
    ax.plot(
        train.step, train.decoder_backward, lw=1, label=f"decoder backward ({train.sensitivity})"
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("NFE per step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(report_dir / "nfe_over_training.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return {
        "rows": bench.union_vs_alone,
        "repeats": bench.union_vs_alone[0].repeats if bench.union_vs_alone else 0,
        "minutes": bench.seconds / 60,
        "steps": len(train.step),
        "sensitivity": train.sensitivity,
        "tenth": tenth,
        "first": (
            statistics.fmean(train.decoder_forward[:tenth]),
            statistics.fmean(train.decoder_backward[:tenth]),
        ),
        "last": (
            statistics.fmean(train.decoder_forward[-tenth:]),
            statistics.fmean(train.decoder_backward[-tenth:]),
        ),
        "encoder": statistics.fmean(train.encoder_forward),
        "figure": f"{report_dir.name}/nfe_over_training.png",
    }


def _differs(frame: pd.DataFrame, jobs: Jobs) -> list[tuple[str, str, str]]:
    """(setting, paper, ours) for the latent report, from the first periodic latent ODE run."""
    first = next((j for j in jobs if j.ok and j.overrides.get("experiment") == "latent_ode"), None)
    cfg = first.run.config if first is not None else None
    if cfg is None:
        return []
    datasets = sorted(frame["dataset"].unique())
    data = f"{cfg.data.n_train} periodic series of {cfg.data.grid_size} grid times (toy)" + (
        "; yearly sunspot windows" if "sunspots" in datasets else ""
    )
    longest = frame["wall_s"].max() / 60 if frame["wall_s"].notna().any() else float("nan")
    ours = {
        "Data": data,
        "Latent dimension": str(cfg.model.latent_dim),
        "Training": f"{cfg.trainer.max_epochs} epochs (toy), at most {longest:.1f} min a run",
        "Baselines": ", ".join(MODELS[m] for m in ("rnn_baseline", "ode_rnn")),
        "Device": "; ".join(frame["device"].unique()),
    }
    return [(k, v, ours[k]) for k, v in paper_settings("rubanova2019", "latent").items()]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, a results table and figures per dataset, the benchmark, Hopper."""
    frame = latent_frame(jobs, budget)
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget)
    write_claims(report_dir / "claims.json", judged)
    raw = getattr(jobs, "bench", {}).get("bench_latent")
    bench = load_record("bench/bench_latent.json", BenchLatent, data=raw) if raw else None
    # The first seed's test-series figures of each dataset and model.
    ok_jobs = [j for j in jobs if j.ok]
    ordered = frame.reset_index(drop=True)
    firsts = ordered.groupby(["dataset", "experiment"], sort=False).head(1)
    first_job = {
        (r.dataset, r.experiment): ok_jobs[i]
        for i, r in zip(firsts.index, firsts.itertuples(), strict=True)
    }
    figures: dict[str, list[tuple[str, str]]] = {}
    for name in DATASETS:
        for model in (m for m in MODELS if (name, m) in first_job):
            for png in copy_plots(first_job[name, model], report_dir, prefix=f"{name}_{model}_"):
                figures.setdefault(name, []).append(
                    (MODELS[model], f"{report_dir.name}/{png.name}")
                )
    present = [d for d in DATASETS if len(frame) and (frame["dataset"] == d).any()]
    return render(
        "latent.md.j2",
        budget=budget,
        headline=[v for v in judged if v.section != "hopper"],
        hopper=[v for v in judged if v.section == "hopper"],
        labels={c.id: c.text for c in load_claims("rubanova2019").values()},
        figure=next((p for _, p in figures.get("periodic", []) if "extrapolation" in p), None),
        differs=_differs(frame, jobs),
        datasets=[(d, DATASETS[d], results(frame, d), figures.get(d, [])) for d in present],
        seeds=", ".join(sorted(frame["seed"].unique(), key=int)) if len(frame) else "none",
        minutes=frame["wall_s"].sum() / 60 if len(frame) else 0.0,
        bench=bench_summary(bench, report_dir) if bench else None,
        runs=[(f"{r.dataset} {r.experiment} seed {r.seed}", r.path) for r in frame.itertuples()],
        failed=[relative_path(j.output_dir) for j in jobs if not j.ok],
    )


LATENT = Reproduction.from_conf(
    "latent", "Latent ODEs for irregularly sampled time series (Rubanova et al. 2019)", build_report
)

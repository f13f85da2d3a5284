"""Report for "Dissecting Neural ODEs" (Massaroli et al. 2020): every variant of one classifier on
concentric annuli, the augmentations on images, and the data-controlled CNF.

The runs become one pandas frame (`runs_frame`); the section of a run is the tag of its sweep in
`conf/reproduce/dissecting.yaml`, its model the `model/variant` (annuli) or the augmentation
(images). The claims of `conf/claims/massaroli2020.yaml` (and the checks.yaml claims whose
report is this one) are judged from the frame into `claims.json` beside the report; figures are
linked in place in the records, not copied.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

import odelab.reports.base as base
import odelab.reports.claims as cl
from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR
from odelab.reports.base import JobResult, Jobs, relative_path
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.render import render

TAGS = base.conf_tags("dissecting")
PAPERS = ("massaroli2020", "checks")  # checks.yaml: the ANODE replication's MNIST claims
# Every `model/variant` option, the vanilla NODE first (the order of the tests' variants).
_OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "model" / "variant").glob("*.yaml"))
VARIANTS = ("vanilla", *(v for v in _OPTIONS if v != "vanilla"))
# Image models by their augmentation override; the plain ODE-Net has none.
IMAGE_MODELS = {"zero": "anode", "input_layer": "input_layer", "higher_order": "higher_order"}
# The frame column each claim metric reads.
METRICS = {
    "test accuracy": "acc",
    "learned horizon spread": "metric.test/horizon_std",
    "parameters": "metric.model/params",
    "conditional test NLL": "metric.test/nll",
}
# Per-run columns averaged in the section tables (the template picks and formats them).
COLUMNS = ("acc", "nfe_step", "metric.test/nfe_forward", "train_s", "wall_s", "metric.test/nll")


def _nfe_step(job: JobResult) -> float:
    """Forward + backward evaluations per training step, averaged over the epochs."""
    total = 0.0
    for key in ("train/nfe_forward_epoch", "train/nfe_backward_epoch"):
        values = job.run.epoch_series(key)[1]
        total += statistics.fmean(values) if values else job.metrics.get(key, math.nan)
    return total


def _in_reports(path: Path) -> str:
    """`path` as linked from a report beside its folder in experiments/reports."""
    text = relative_path(path)
    prefix = "experiments/reports/"
    return text[len(prefix) :] if text.startswith(prefix) else text


def _get(frame: pd.DataFrame, key: str) -> pd.Series:
    """Column `key`, or all-missing when no run set that override."""
    return frame[key] if key in frame else pd.Series(None, index=frame.index, dtype=object)


def dissecting_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """One row per run with `tag` (section), `model`, accuracy in %, NFE per step, training
    seconds and the run folder; the rows in seed order (sweep order within a seed)."""
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    if frame.empty:  # typed columns, so that boolean masks on `ok` select rows
        names = ("tag", "model", "seed", "acc", "wall_s", "device", "plots", "path")
        return pd.DataFrame({"ok": pd.Series(dtype=bool), **{c: pd.Series() for c in names}})
    if "tag" not in frame:  # records read outside a tagged budget
        frame["tag"] = "annuli_2d"
    variant = _get(frame, "model/variant").fillna("vanilla")
    image = _get(frame, "model.net.augment").map(IMAGE_MODELS).fillna("node")
    tag = frame["tag"].astype(str)
    frame["model"] = variant.where(~tag.str.startswith("images"), image)
    frame.loc[tag == "cnf", "model"] = "data_control"
    frame["acc"] = 100 * frame["metric.test/acc"] if "metric.test/acc" in frame else math.nan
    frame["nfe_step"] = [_nfe_step(j) for j in jobs]
    frame["train_s"] = [j.run.step_seconds for j in jobs]
    frame["plots"] = [j.output_dir / "plots" for j in jobs]
    frame["path"] = [relative_path(j.output_dir) for j in jobs]
    frame["order"] = frame["seed"].astype(int)
    return frame.sort_values("order", kind="stable")


def _column(claim: cl.Claim) -> str:
    if claim.metric not in METRICS:
        raise ConfigError(
            f"claim {claim.id}: metric {claim.metric!r} has no column in the dissecting report "
            f"(known: {sorted(METRICS)})"
        )
    return METRICS[claim.metric]


def verdicts(frame: pd.DataFrame, budget: str) -> list[cl.Verdict]:
    """Every claim of this report judged on `budget`, or not testable with why."""
    out = []
    for paper in PAPERS:
        for claim in cl.load_claims(paper).values():
            if claim.report != "dissecting":
                continue
            if budget not in claim.budgets:
                testing = ", ".join(f"`{b}`" for b in claim.budgets) or "none"
                out.append(cl.not_testable(claim, claim.reason or f"budgets testing it: {testing}"))
                continue
            rows = frame[frame["tag"] == claim.section]
            arms = [seed_values(rows, _column(claim), model=arm) for arm in claim.arms]
            if claim.kind == "contrast":
                a, b = arms[0].align(arms[1], join="inner")
                out.append(cl.evaluate(claim, list(a), list(b)))
            else:
                out.append(cl.evaluate(claim, list(arms[0])))
    return out


def section_table(frame: pd.DataFrame, tag: str, threshold: float) -> list[dict[str, Any]]:
    """Per model of one section (in sweep order): mean and std of each column, parameters,
    per-seed accuracy and how many seeds reach `threshold`."""
    rows = frame[frame["ok"] & (frame["tag"] == tag)]
    if rows.empty:
        return []
    columns = [c for c in COLUMNS if c in rows]
    groups = rows.groupby("model", sort=False)
    stats = groups[columns].agg(["mean", "std"])
    out = []
    for model, group in groups:
        accuracy = group["acc"].tolist()
        out.append(
            {
                "model": model,
                "n": len(group),
                "cells": {
                    c: (stats.loc[model, (c, "mean")], stats.loc[model, (c, "std")])
                    if c in columns
                    else (None, None)
                    for c in COLUMNS
                },
                "params": group.get("metric.model/params", pd.Series([None])).iloc[0],
                "seeds": accuracy,
                "reached": sum(a >= threshold for a in accuracy if not math.isnan(a)),
            }
        )
    return out


def _figures(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, plots folder) of the first seed of each 2D annuli model, linked in place."""
    firsts = frame[frame["ok"] & (frame["tag"] == "annuli_2d")].groupby("model", sort=False)
    return [(m, _in_reports(g["plots"].iloc[0])) for m, g in firsts if g["plots"].iloc[0].is_dir()]


def _configs(frame: pd.DataFrame, jobs: Jobs) -> dict[str, Any]:
    """The resolved config of the first finished run of each section (the `differs` values)."""
    firsts = frame[frame["ok"]].groupby("tag", sort=False).head(1)
    return {tag: jobs[i].run.config for i, tag in firsts["tag"].items()}


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts on the 2D annuli, a table per section, figures in place, runs."""
    frame = dissecting_frame(jobs, budget)
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget)
    cl.write_claims(report_dir / "claims.json", judged)
    claims = {c.id: c for p in PAPERS for c in cl.load_claims(p).values()}
    threshold = claims["annuli_vanilla_fails"].threshold

    # A claim only a follow-up budget tests (seeds10) is listed with the untested ones elsewhere.
    def headline(c: cl.Claim) -> bool:
        return budget in c.budgets or any(b in ("quick", "cpu") for b in c.budgets)

    untested = [v for v in judged if not headline(claims[v.claim])]
    tested = [v for v in judged if headline(claims[v.claim])]
    tags = list(dict.fromkeys(frame["tag"]))
    vanilla = frame[frame["ok"] & (frame["tag"] == "annuli_2d") & (frame["model"] == "vanilla")]
    worst = vanilla.loc[vanilla["acc"].idxmin()] if len(vanilla) else None
    done = frame[frame["ok"]]
    adaptive = done[(done["tag"] == "annuli_2d") & (done["model"] == "adaptive_depth")]
    horizon = adaptive.reindex(columns=["metric.test/horizon", "metric.test/horizon_std"])
    return render(
        "dissecting.md.j2",
        budget=budget,
        headline=[v for v in tested if v.section == "annuli_2d"],
        sections={t: [v for v in tested if v.section == t] for t in tags},
        untested=untested,
        labels={c.id: c.text for c in claims.values()},
        about=claims,
        threshold=threshold,
        tables={t: section_table(frame, t, threshold) for t in tags},
        worst=None if worst is None else (worst["seed"], worst["acc"], _in_reports(worst["plots"])),
        figures=_figures(frame),
        cnf_plots=next((_in_reports(p) for p in done.loc[done["tag"] == "cnf", "plots"]), ""),
        horizon=[(horizon[c].mean(), horizon[c].std(), len(horizon)) for c in horizon],
        cfg=_configs(frame, jobs),
        paper=cl.paper_settings("massaroli2020", "dissecting"),
        device="; ".join(done["device"].unique()),
        seeds=", ".join(sorted(done["seed"].unique(), key=int)),
        minutes=done["wall_s"].sum() / 60,
        longest=done["wall_s"].max() / 60,
        runs=[
            (tag, model, ", ".join(f"`{p}`" for p in g["path"]))
            for (tag, model), g in frame.groupby(["tag", "model"], sort=False)
        ],
        failed=[relative_path(j.output_dir) for j in jobs if not j.ok],
    )


DISSECTING = base.Reproduction.from_conf(
    "dissecting",
    "Dissecting Neural ODEs (Massaroli et al. 2020): annuli variants and image augmentation",
    build_report,
)

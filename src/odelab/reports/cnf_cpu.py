"""The CNF report on the small report layer: runs as a pandas frame, claims judged from YAML.

Every budget of `make reproduce-cnf` renders through `build`: the sections are the tags of its
sweeps in `conf/reproduce/cnf.yaml` (selection, targets, capacity, rnode, seminorm), plus the
benchmark records of `experiments/bench_cnf.py` (recipes, seminorm on the same weights), typed
in `cnf_records`. The claims of `conf/claims/grathwohl2019.yaml` and the CNF claims of
`chen2018.yaml` are judged into `claims.json`; `templates/cnf.md.j2` presents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from odelab.data.toy2d import SAMPLERS
from odelab.reports.base import JobResult, Jobs, conf_tags, device_text, relative_path
from odelab.reports.claims import (
    Verdict,
    evaluate,
    load_claims,
    not_testable,
    paper_settings,
    write_claims,
)
from odelab.reports.cnf_records import RecipesRecord, SeminormRecord, figures, load_bench
from odelab.reports.frame import runs_frame
from odelab.reports.render import render

TAGS = conf_tags("cnf")
PAPERS = ("grathwohl2019", "chen2018")
# Config values each row needs beside the overrides (the frame keeps override strings only).
CONFIG_COLUMNS = {
    "target": "data.name",
    "trace_estimator": "trace.estimator",
    "lam": "model.kinetic_weight",
    "learn_t": "model.flow.learn_t_end",
    "step": "solver.step_size",
    "layers": "model.flow.layers",
    "units": "model.flow.field.units",
    "epochs": "trainer.max_epochs",
    "batches": "data.batches_per_epoch",
    "batch": "data.batch_size",
    "t_end": "model.flow.t_end",
}


def _tag(job: JobResult) -> str:
    """The section tag of a job's sweep, looked up in the budget that holds its folder
    (`experiments/reports/cnf_<budget>/records/<sweep>/<job>`, or a fresh run's
    `logs/reproduce/cnf/<budget>/<sweep>/<job>`): a combined budget reads its parts in place."""
    sweep = job.output_dir.parent
    holder = sweep.parent.name
    budget = sweep.parent.parent.name.removeprefix("cnf_") if holder == "records" else holder
    tags = TAGS.get(budget, [])
    return tags[int(sweep.name)] if sweep.name.isdigit() and int(sweep.name) < len(tags) else ""


def cnf_frame(jobs: Jobs) -> pd.DataFrame:
    """The runs with their tag, config columns, NFE per step and training seconds."""
    frame = runs_frame(jobs)
    if frame.empty:
        return frame
    frame["tag"] = [_tag(j) for j in jobs]
    for column, key in CONFIG_COLUMNS.items():
        frame[column] = [
            OmegaConf.select(j.run.config, key) if j.run.config is not None else None for j in jobs
        ]
    frame["experiment"] = frame.get("experiment", pd.Series("?", index=frame.index)).fillna("?")
    frame["trace"] = frame["trace_estimator"].fillna(frame.get("trace", "exact"))
    frame["seminorm"] = frame.get("sensitivity.seminorm", pd.Series("", index=frame.index))
    frame["steps"] = frame["epochs"] * frame["batches"]
    forward = frame.get("metric.train/nfe_forward_epoch", pd.Series(float("nan"), frame.index))
    backward = frame.get("metric.train/nfe_backward_epoch", pd.Series(0.0, frame.index))
    frame["nfe_step"] = forward + backward.fillna(0.0)
    frame["bwd_step"] = backward
    frame["train_s"] = [j.run.step_seconds for j in jobs]
    frame["job_dir"] = [str(j.output_dir) for j in jobs]
    frame["train_nfe"] = (
        frame["metric.train/nfe_forward_epoch"] * frame["steps"]
        if ("metric.train/nfe_forward_epoch" in frame)
        else float("nan")
    )
    frame["model"] = [_model(r) for r in frame.itertuples()]
    frame["lam"] = frame["lam"].fillna(0.0).astype(float)
    return frame[frame["ok"]]


def _model(row: Any) -> str:
    if row.experiment == "planar_flow":
        return f"planar K={row.layers}"
    return f"CNF M={row.units}" if pd.notna(row.units) else "CNF"


def _order(targets: pd.Series) -> pd.Series:
    order = list(SAMPLERS)
    return targets.map(lambda t: order.index(t) if t in order else len(order))


def _agg(rows: pd.DataFrame, by: list[str], columns: dict[str, str]) -> list[dict[str, Any]]:
    """mean and std of each `columns` value (name -> frame column) per group, plus n."""
    present = {k: v for k, v in columns.items() if v in rows}
    grouped = rows.groupby(by, sort=False, dropna=False)
    table = grouped[list(present.values())].agg(["mean", "std"])
    table.columns = [f"{dict(map(reversed, present.items()))[c]}_{s}" for c, s in table.columns]
    table["n"] = grouped.size()
    table = table.reset_index()
    if "target" in by:
        table = table.sort_values(by, key=lambda s: _order(s) if s.name == "target" else s)
    return table.to_dict("records")


def _pairs(rows: pd.DataFrame, arm: str, a: Any, b: Any, value: str, keys: list[str]):
    """Per-pair values of arm `a` and arm `b`, aligned on `keys` (inner join)."""
    wide = rows.pivot_table(index=keys, columns=arm, values=value, aggfunc="mean")
    if a not in wide or b not in wide:
        return [], []
    wide = wide[[a, b]].dropna()
    return wide[a].tolist(), wide[b].tolist()


def _bench(jobs: Jobs) -> tuple[RecipesRecord | None, SeminormRecord | None]:
    raw = getattr(jobs, "bench", {})
    return load_bench(raw.get("bench_cnf_recipes"), raw.get("bench_cnf_seminorm"))


def verdicts(frame: pd.DataFrame, budget: str, recipes: RecipesRecord | None) -> list[Verdict]:
    """Every CNF claim judged on this budget's runs, or not testable with why."""
    out = []
    tags = set(frame["tag"]) if len(frame) else set()
    for paper in PAPERS:
        for claim in (c for c in load_claims(paper).values() if c.report == "cnf"):
            a, b = _claim_values(claim.id, frame, recipes)
            testable = claim.section in tags or (claim.section == "recipes" and recipes)
            if budget not in claim.budgets or not testable or not a:
                out.append(not_testable(claim, claim.reason))
            else:
                out.append(evaluate(claim, a, b))
    return out


def _claim_values(claim: str, frame: pd.DataFrame, recipes: RecipesRecord | None):
    """The per-seed values (a, b) a claim is judged on: pairs keyed by target and seed."""
    if frame.empty and claim != "fast_recipe_speedup":
        return [], None
    if claim == "toy_density_fit":
        rows = frame[(frame.tag == "targets") & (frame.trace == "exact")]
        column = "metric.test/density_l1"
        return (rows[column].dropna().tolist() if column in rows else []), None
    if claim == "hutchinson_matches_exact":
        rows = frame[frame.tag == "targets"]
        return _pairs(rows, "trace", "hutchinson", "exact", "metric.test/nll", ["target", "seed"])
    if claim in ("rnode_cuts_nfe", "rnode_equal_likelihood"):
        rows = frame[frame.tag == "rnode"].assign(learn=lambda d: d.learn_t.astype(str))
        lam = 0.03 if (rows.lam == 0.03).any() else rows.lam.max()
        value = "nfe_step" if claim == "rnode_cuts_nfe" else "metric.test/nll"
        return _pairs(rows, "lam", lam, 0.0, value, ["target", "learn", "seed"])
    if claim == "cnf_beats_planar":
        rows = frame[frame.tag == "capacity"]
        cnf = rows[rows.model.str.startswith("CNF")].sort_values("units", na_position="last")
        planar = rows[rows.model.str.startswith("planar")].sort_values("layers")
        if cnf.empty or planar.empty:
            return [], None
        arms = [cnf.model.iloc[-1] if cnf.units.isna().all() else cnf.model.iloc[-1]]
        return _pairs(
            rows, "model", arms[0], planar.model.iloc[-1], "metric.test/nll", ["target", "seed"]
        )
    if claim == "fast_recipe_speedup" and recipes:
        return [r.speedup for r in recipes.recipes if r.speedup is not None], None
    return [], None


def sections(frame: pd.DataFrame) -> dict[str, Any]:
    """The tables of every section this budget's runs have (pandas groupbys)."""
    out: dict[str, Any] = {}
    by_tag = dict(tuple(frame.groupby("tag"))) if len(frame) else {}
    if "selection" in by_tag:
        rows = by_tag["selection"]
        table = _agg(
            rows,
            ["target", "step", "lam", "steps"],
            {
                "val": "metric.val/nll",
                "vnfe": "metric.val/nfe_forward",
                "tnfe": "train_nfe",
                "s": "train_s",
            },
        )
        # Runs without a validation NLL cannot be selected among (NaN compares false).
        table = [r for r in table if r["val_mean"] == r["val_mean"]]
    if "selection" in by_tag and table:
        best = min(r["val_mean"] for r in table)
        near = [r for r in table if r["val_mean"] <= best + 0.05]
        out["selection"] = {
            "rows": table,
            "best": best,
            "pick": min(near, key=lambda r: r["tnfe_mean"]),
        }
    if "targets" in by_tag:
        out["targets"] = _agg(
            by_tag["targets"],
            ["target", "trace"],
            {
                "nll": "metric.test/nll",
                "nfe": "nfe_step",
                "tnfe": "metric.test/nfe_forward",
                "s": "train_s",
                "l1": "metric.test/density_l1",
            },
        )
    if "capacity" in by_tag:
        out["capacity"] = _agg(by_tag["capacity"], ["target", "model"], {"nll": "metric.test/nll"})
    if "rnode" in by_tag:
        out["rnode"] = _agg(
            by_tag["rnode"],
            ["target", "learn_t", "lam"],
            {
                "nll": "metric.test/nll",
                "tnfe": "metric.test/nfe_forward",
                "nfe": "nfe_step",
                "t": "t_end",
            },
        )
    if "seminorm" in by_tag:
        out["seminorm"] = _agg(
            by_tag["seminorm"],
            ["target", "seminorm"],
            {"bwd": "bwd_step", "nll": "metric.test/nll"},
        )
    return out


def _differs(frame: pd.DataFrame, jobs: Jobs) -> list[tuple[str, str, str]]:
    """(setting, the papers' value from grathwohl2019.yaml `settings`, ours)."""
    ran = len(frame) > 0
    steps = sorted({int(s) for s in frame["steps"].dropna()}) if ran else []
    keys = ["tag", "target", "model", "lam", "trace"]
    seeds = frame.groupby(keys, dropna=False).size() if ran else pd.Series(dtype=int)
    ours = {
        "Steps": ", ".join(f"{s:,}" for s in steps) or "n/a",
        "Training solver": "rk4 (fast recipe) or dopri5 1e-5 direct (RNODE, seminorm: adjoint)",
        "Seeds": f"{seeds.min()} to {seeds.max()} per setting" if ran else "n/a",
        "Device": device_text(next(iter(jobs)).run.device) if ran else "n/a (benchmark only)",
    }
    return [(k, v, ours[k]) for k, v in paper_settings("grathwohl2019", "cnf").items()]


def build(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """The CNF report of any budget: headline verdicts, then one section per sweep tag."""
    frame = cnf_frame(jobs)
    recipes, seminorm = _bench(jobs)
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget, recipes)
    write_claims(report_dir / "claims.json", judged)
    tables = sections(frame)
    return render(
        "cnf.md.j2",
        budget=budget,
        headline=[v for v in judged if v.verdict != "not testable here"] or judged,
        untested=[v for v in judged if v.verdict == "not testable here"],
        labels=None,  # claim ids; their sentences are in the claims YAML
        figures=figures(frame, tables, recipes, report_dir),
        differs=_differs(frame, jobs),
        n=len(frame),
        failed=[relative_path(j.output_dir) for j in jobs if not j.ok],
        tables=tables,
        recipes=recipes,
        seminorm_weights=seminorm.table() if seminorm else None,
        runs=[
            (tag, relative_path(Path(folder)), count)
            for (tag, folder), count in frame.groupby(
                ["tag", frame["job_dir"].map(lambda d: str(Path(d).parent))], sort=False
            )
            .size()
            .items()
        ]
        if len(frame)
        else [],
    )

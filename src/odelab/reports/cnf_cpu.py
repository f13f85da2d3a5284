"""The CNF report of any budget: pandas tables per sweep tag (`conf/reproduce/cnf.yaml`) and
the CNF claims of `conf/claims/` judged into `claims.json`; `templates/cnf.md.j2` presents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

import odelab.reports.claims as claims
from odelab.records.cnf import RecipesRecord, SeminormRecord
from odelab.reports.base import JobResult, Jobs, conf_budgets, conf_tags, relative_path
from odelab.reports.cnf_records import FIGURES, figures
from odelab.reports.frame import runs_frame
from odelab.reports.records import load_record
from odelab.reports.render import render

TAGS = conf_tags("cnf")
BENCHMARKS = conf_budgets("cnf")[1]
PAPERS = ("grathwohl2019", "chen2018")
BENCH = {"bench_cnf_recipes": RecipesRecord, "bench_cnf_seminorm": SeminormRecord}
# frame column <- final metric, and <- config key
METRICS = {
    "nll": "test/nll",
    "tnfe": "test/nfe_forward",
    "l1": "test/density_l1",
    "val": "val/nll",
    "vnfe": "val/nfe_forward",
    "fwd": "train/nfe_forward_epoch",
    "bwd": "train/nfe_backward_epoch",
    "learned_t": "train/t_end",
}
CONFIG = {
    "target": "data.name",
    "estimator": "trace.estimator",
    "learn": "model.flow.learn_t_end",
    "lam": "model.kinetic_weight",
    "step": "solver.step_size",
    "t": "model.flow.t_end",
    "seminorm": "sensitivity.seminorm",
    "layers": "model.flow.layers",
    "units": "model.flow.field.units",
    "epochs": "trainer.max_epochs",
    "batches": "data.batches_per_epoch",
}
# Each section's table: the group keys, and the columns aggregated over their runs.
SECTIONS = {
    "selection": (["target", "step", "lam", "steps"], ["val", "vnfe", "train_nfe", "s"]),
    "targets": (["target", "trace"], ["nll", "nfe", "tnfe", "s", "l1"]),
    "capacity": (["target", "kind", "size", "model"], ["nll"]),
    "rnode": (["target", "learn_t", "lam"], ["nll", "tnfe", "nfe", "t"]),
    "seminorm": (["target", "seminorm"], ["bwd", "nll"]),
}


def _tag(job: JobResult) -> str:
    """The tag of its sweep in the budget whose `records/<sweep>` (or log) folder holds it."""
    sweep, holder = job.output_dir.parent, job.output_dir.parent.parent
    budget = holder.parent.name.removeprefix("cnf_") if holder.name == "records" else holder.name
    tags = TAGS.get(budget, [])
    return tags[int(sweep.name)] if sweep.name.isdigit() and int(sweep.name) < len(tags) else ""


def cnf_frame(jobs: Jobs) -> pd.DataFrame:
    """The finished runs with their tag, config columns, NFE per training step, seconds."""
    frame = runs_frame(jobs)
    config = {
        c: [OmegaConf.select(j.run.config, k) if j.run.config else None for j in jobs]
        for c, k in CONFIG.items()
    }
    frame = frame.assign(
        **{c: frame.get(f"metric.{m}", float("nan")) for c, m in METRICS.items()},
        **config,
        tag=[_tag(j) for j in jobs],
        s=pd.Series([j.run.step_seconds for j in jobs], index=frame.index, dtype=float),
        job_dir=[str(j.output_dir) for j in jobs],
    ).assign(
        kind=lambda f: f.layers.notna().map({True: "planar", False: "CNF"}),  # K layers: planar
        trace=lambda f: f.estimator.fillna(f.get("trace", "exact")),
        learn_t=lambda f: f.learn.map({True: "learned"}).fillna("fixed"),
        steps=lambda f: f.epochs * f.batches,
        nfe=lambda f: f.fwd + f.bwd.fillna(0.0),
        train_nfe=lambda f: f.fwd * f.steps,
        t=lambda f: f.learned_t.fillna(f.t),
        size=lambda f: pd.to_numeric(f.layers.where(f.kind == "planar", f.units)),
    )
    label = frame.kind.map({"planar": " K=", "CNF": " M="}) + frame["size"].map("{:g}".format)
    frame["model"] = frame.kind + label.where(frame["size"].notna(), "")
    return frame[frame.ok.astype(bool)]


def summary(rows: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """`<value>_mean`, `_std`, `_sum`, `_max` of each value and `n` per group of `by`, sorted."""
    grouped = rows.groupby(by, dropna=False)
    table = grouped[values].agg(["mean", "std", "sum", "max"])
    table.columns = [f"{value}_{stat}" for value, stat in table.columns]
    return table.assign(n=grouped.size()).reset_index()


def _pairs(rows: pd.DataFrame, arm: str, a: Any, b: Any, value: str, keys: list[str]):
    """Per-pair values of `a` and `b` in column `arm`, aligned on `keys` (both present)."""
    wide = rows.pivot_table(index=keys, columns=arm, values=value, aggfunc="mean")
    wide = wide.reindex(columns=[a, b]).dropna()
    return wide[a].tolist(), wide[b].tolist()


def _claim_values(claim: claims.Claim, frame: pd.DataFrame, recipes: Any) -> tuple[list, Any]:
    """The values (a, b) a claim is judged on: per run, or pairs keyed by target and seed."""
    if claim.id == "fast_recipe_speedup":
        return [r.speedup for r in recipes.recipes if r.speedup] if recipes else [], None
    rows = frame[frame.tag == claim.section]
    if rows.empty:
        return [], None
    if claim.id == "toy_density_fit":
        return rows[rows.trace == "exact"].l1.dropna().tolist(), None
    if claim.id == "hutchinson_matches_exact":
        return _pairs(rows, "trace", "hutchinson", "exact", "nll", ["target", "seed"])
    if claim.section == "rnode":
        lam = 0.03 if (rows.lam == 0.03).any() else rows.lam.max()
        value = "nfe" if claim.id == "rnode_cuts_nfe" else "nll"
        return _pairs(rows, "lam", lam, 0.0, value, ["target", "learn_t", "seed"])
    top = rows.sort_values("size").groupby("kind").model.last()  # the largest of each kind
    return _pairs(
        rows, "model", top.get("CNF", ""), top.get("planar", ""), "nll", ["target", "seed"]
    )


def sections(frame: pd.DataFrame, seminorm: Any) -> dict[str, list[dict[str, Any]]]:
    """The table of each section this budget has (and of both norms on the same weights)."""
    groups = frame.groupby("tag")
    tables = {tag: summary(rows, *SECTIONS[tag]) for tag, rows in groups if tag in SECTIONS}
    if seminorm:
        runs = pd.DataFrame([vars(r) for r in seminorm.seminorm])
        runs["same"] = (runs.grad_rel_diff == 0).astype(int)
        weights = ["experiment", "train_steps", "kinetic_weight", "trained_sensitivity"]
        values = ["nfe_backward_full", "nfe_backward_seminorm", "same", "grad_rel_diff"]
        t = tables["weights"] = summary(runs, ["target", *weights, "trained_with_seminorm"], values)
        t["saving"] = 1 - t.nfe_backward_seminorm_mean / t.nfe_backward_full_mean
    rows = tables.pop("selection", pd.DataFrame(columns=["val_mean"])).dropna(subset="val_mean")
    if len(rows):  # within 0.05 nats of the lowest validation NLL, the fewest training NFE
        near = rows[rows.val_mean <= rows.val_mean.min() + 0.05]
        pick = rows.index == near.train_nfe_mean.idxmin()
        tables["selection"] = rows.assign(best=rows.val_mean.min(), pick=pick)
    return {tag: table.to_dict("records") for tag, table in tables.items()}


def _differs(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(setting, the papers' value from grathwohl2019.yaml `settings`, ours)."""
    seeds = frame.groupby(["tag", "target", "model", "lam", "trace"], dropna=False).size()
    steps = sorted(frame.steps.dropna().astype(int).unique())
    ours = {
        "Steps": ", ".join(f"{s:,}" for s in steps) or "n/a",
        "Training solver": "rk4 (fast recipe) or dopri5 1e-5 direct (RNODE, seminorm: adjoint)",
        "Seeds": f"{seeds.min()} to {seeds.max()} per setting" if len(seeds) else "n/a",
        "Device": frame.device.iloc[0] if len(frame) else "n/a (benchmark only)",
    }
    return [(k, v, ours[k]) for k, v in claims.paper_settings("grathwohl2019", "cnf").items()]


def _bench(jobs: Jobs, budget: str) -> dict[str, tuple[dict, Path | None]]:
    """Each benchmark record of `budget` with the report folder of the part budget that stores
    it (None: stored with this budget). One that this budget does not store is read in place
    from a part budget running the same benchmark command (as `base.part_record` does for
    sweeps), found beside the part budgets whose records hold this budget's runs."""
    out = {k: (jobs.bench[k], None) for k in BENCH if jobs.bench.get(k)}
    holders = {j.output_dir.parents[2].parent for j in jobs if j.output_dir.parent.name.isdigit()}
    for part, commands in BENCHMARKS.items():
        if part == budget or not any(c in BENCHMARKS.get(budget, []) for c in commands):
            continue
        for key, folder in ((k, r / f"cnf_{part}") for k in BENCH for r in sorted(holders)):
            record = folder / "records" / "bench" / f"{key}.json"
            if key not in out and record.is_file():
                out[key] = (json.loads(record.read_text()), folder)
    return out


def _stored_figures(frame: pd.DataFrame, sections: list[str], held: dict, out: Path):
    """The sections whose figure a part budget's report already stores, drawn from exactly
    the data this report would draw it from (its runs of that section, or the benchmark
    record it stores): section -> link into that report's folder. A figure is stored once."""
    stored = {}
    for section in sections:
        name = FIGURES[section]
        folder = held.get("bench_cnf_recipes") if section == "recipes" else None
        sweeps = {Path(d).parent for d in frame.job_dir[frame.tag == section]}
        records = {s.parent for s in sweeps}
        if section != "recipes" and len(records) == 1:
            holder = records.pop()
            tags = TAGS.get(holder.parent.name.removeprefix("cnf_"), [])
            part = {holder / str(i) for i, t in enumerate(tags) if t == section}
            folder = holder.parent if sweeps == {p for p in part if p.is_dir()} else None
        if folder is not None and folder.name != out.name and (folder / name).is_file():
            stored[section] = f"{folder.name}/{name}"
    return stored


def build(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """The CNF report of any budget: headline verdicts, then one section per sweep tag."""
    frame = cnf_frame(jobs)
    held = _bench(jobs, budget)
    recipes, seminorm = (
        load_record(f"bench/{k}.json", s, data=held[k][0]) if k in held else None
        for k, s in BENCH.items()
    )
    judged = []  # every CNF claim judged on this budget's runs, or not testable with why
    for c in (c for p in PAPERS for c in claims.load_claims(p).values() if c.report == "cnf"):
        a, b = _claim_values(c, frame, recipes) if budget in c.budgets else ([], None)
        judged.append(claims.evaluate(c, a, b) if a else claims.not_testable(c, c.reason))
    report_dir.mkdir(parents=True, exist_ok=True)
    claims.write_claims(report_dir / "claims.json", judged)
    tables = sections(frame, seminorm)
    drawable = [k for k in FIGURES if k in tables or (k == "recipes" and recipes)]
    homes = {k: folder for k, (_, folder) in held.items()}
    stored = _stored_figures(frame, drawable, homes, report_dir)
    folders = frame.job_dir.map(lambda d: relative_path(Path(d).parent))
    return render(
        "cnf.md.j2",
        budget=budget,
        verdicts=judged,
        figures=figures(frame, tables, recipes, report_dir, stored),
        differs=_differs(frame),
        n=len(frame),
        failed=[relative_path(j.output_dir) for j in jobs if not j.ok],
        tables=tables,
        recipes=recipes,
        runs=[(*key, n) for key, n in frame.groupby(["tag", folders], sort=False).size().items()],
    )

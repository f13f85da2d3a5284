"""Report for issue 42 (seed 003): recovering unknown dynamics, and training on stiff ones.

The runs of `conf/reproduce/dynamics.yaml` (sweeps tagged `table`: system x noise x sampling, or
`stiff`: solver routes on van der Pol mu and Robertson) as one pandas frame, judged against
`conf/claims/dynamics.yaml` into `claims.json`, rendered by `templates/dynamics.md.j2`.
A run succeeds when it finished with `test/diverged = 0` and a finite held-out error; a diverged
or crashed run is a failure, counted in every rate and run count, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from scipy import stats

from odelab.hydra_setup import CONFIG_DIR
from odelab.reports.base import Jobs, Reproduction, conf_tags
from odelab.reports.claims import Claim, evaluate, load_claims, not_testable, write_claims
from odelab.reports.frame import runs_frame
from odelab.reports.render import render
from odelab.reports.stats import binomial_interval

_SPEC = CONFIG_DIR / "reproduce" / "dynamics.yaml"
TAGS = conf_tags("dynamics") if _SPEC.is_file() else {}
# Override key -> (config key read when the sweep leaves it at its default, that default).
KEYS = {
    "data.noise_frac": ("data.noise_frac", 0.0),
    "data.keep_frac": ("data.keep_frac", 1.0),
    "solver": ("solver.method", "dopri5"),
    "data.scale": ("data.scale", False),
    "data.system.mu": ("data.system.mu", 1.0),
    "trainer.max_epochs": ("trainer.max_epochs", math.nan),
}
# The test metrics the report reads (`metric.test/<name>`), as plain columns of the frame.
METRICS = ("traj_mae", "traj_rel", "extrap_rel", "train_wall_s", "peak_rss_mb")
NFE = ("nfe_forward_per_step", "nfe_backward_per_step")


def study_frame(jobs: Jobs, tags: list[str] | None) -> pd.DataFrame:
    """`runs_frame` with every study key filled (from the run's config where the sweep did not
    override it), `case` (system, with mu for van der Pol), `route`, `sampling`, `success`."""
    frame = runs_frame(jobs, tags=tags or None)
    configs = [j.run.config or OmegaConf.create() for j in jobs]
    for key, (config_key, default) in KEYS.items():
        cfg = [OmegaConf.select(c, config_key, default=default) for c in configs]
        cfg = pd.Series(cfg, index=frame.index, dtype=object)
        frame[key] = frame[key].where(frame[key].notna(), cfg) if key in frame else cfg
    for name in (*METRICS, *NFE, "diverged"):
        col = f"metric.test/{name}"
        frame[name] = pd.to_numeric(frame[col], errors="coerce") if col in frame else math.nan
    frame["tag"] = frame["tag"] if "tag" in frame else "table"
    frame["system"] = frame["experiment"].astype(str).str.removeprefix("dynamics_")
    frame["noise"] = pd.to_numeric(frame["data.noise_frac"]).astype(float)
    frame["keep"] = pd.to_numeric(frame["data.keep_frac"]).astype(float)
    mu = pd.to_numeric(frame["data.system.mu"], errors="coerce")
    vdp = frame["system"] == "van_der_pol"
    frame["case"] = frame["system"].where(~vdp, "van_der_pol_mu" + mu.map("{:g}".format))
    scaled = frame["data.scale"].astype(str).str.lower().isin(("true", "1"))
    solver = frame["solver"].astype(str)
    implicit = solver.str.startswith("scipy")
    frame["route"] = np.where(implicit, "implicit", np.where(scaled, "scaled", "explicit"))
    frame["solver_label"] = solver + np.where(scaled & ~implicit, " + scaling", "")
    frame["sampling"] = np.where(frame["keep"] >= 1.0, "dense", "sparse")
    finished = frame["ok"].astype(bool) & frame["diverged"].fillna(0.0).eq(0.0)
    frame["success"] = (finished & np.isfinite(frame["traj_rel"])).astype(float)
    failures = [j.output_dir / "failure.txt" for j in jobs]  # the run's one-line reason
    frame["failure"] = [p.read_text().strip() if p.is_file() else "" for p in failures]
    return frame


def _t_half(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95 % t interval of a mean (NaN below two values)."""
    q = pd.Series(stats.t.ppf(0.975, (n - 1).clip(lower=1)), index=n.index)
    return (q * std / np.sqrt(n)).where(n > 1)


def recovery_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (case, noise, sampling): runs, failures, n successful, `<metric>_mean`/`_std` of
    every METRICS column over the successful runs, the 95 % t interval of `traj_rel`."""
    rows, keys = frame[frame["tag"] == "table"], ["case", "noise", "sampling"]
    good = rows[rows["success"] > 0].groupby(keys)
    table = good[list(METRICS)].agg(["mean", "std"])
    table.columns = [f"{m}_{s}" for m, s in table.columns]
    table["n"] = good["traj_rel"].count()
    counts = rows.assign(failed=rows["success"] == 0).groupby(keys)
    table = counts.agg(runs=("job", "size"), failed=("failed", "sum")).join(table).reset_index()
    table["n"] = table["n"].fillna(0).astype(int)
    half = _t_half(table["traj_rel_std"], table["n"])
    return table.assign(low=table["traj_rel_mean"] - half, high=table["traj_rel_mean"] + half)


def noise_slopes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (case, seed), dense sampling, noise > 0: the least-squares slope and intercept of
    log(relative error) against log(noise)."""
    rows = frame[(frame["tag"] == "table") & (frame["sampling"] == "dense") & (frame["noise"] > 0)]
    rows = rows[(rows["success"] > 0) & (rows["traj_rel"] > 0)]
    rows = rows.groupby(["case", "seed"]).filter(lambda g: g["noise"].nunique() > 1)
    if rows.empty:
        return pd.DataFrame(columns=["case", "seed", "slope", "intercept"])
    fit = rows.groupby(["case", "seed"])[["noise", "traj_rel"]].apply(
        lambda g: pd.Series(stats.linregress(np.log(g["noise"]), np.log(g["traj_rel"]))._asdict())
    )
    return fit[["slope", "intercept"]].reset_index()


def slope_table(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per case: mean slope `k` over seeds ± `std`, `n`, the 95 % t interval, mean intercept."""
    table = slopes.dropna(subset=["slope"]).groupby("case")
    table = table.agg(k=("slope", "mean"), std=("slope", "std"), n=("slope", "count"))
    table["b"] = slopes.groupby("case")["intercept"].mean()
    half = _t_half(table["std"], table["n"])
    return table.assign(low=table["k"] - half, high=table["k"] + half).reset_index()


def stiff_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (case, route, solver): runs, successes `ok`, `rate` and its exact interval, job seconds
    (all runs); `<col>_mean`/`_std` of NFE per step, train time, error (successful runs)."""
    rows, keys = frame[frame["tag"] == "stiff"], ["case", "route", "solver_label"]
    cols = [*NFE, "train_wall_s", "traj_rel"]
    good, runs = rows[rows["success"] > 0].groupby(keys)[cols], rows.groupby(keys)
    table = runs.agg(runs=("job", "size"), ok=("success", "sum"), job_s=("wall_s", "mean"))
    table = table.join(good.mean().add_suffix("_mean")).join(good.std().add_suffix("_std"))
    table["why"] = runs["failure"].agg(lambda s: "; ".join(sorted(set(s) - {""})) or "—")
    table = table.reset_index().astype({"ok": int})
    ci = np.array([binomial_interval(r.ok, r.runs) for r in table.itertuples()]).reshape(-1, 2)
    return table.assign(rate=table["ok"] / table["runs"], low=ci[:, 0] / 100, high=ci[:, 1] / 100)


def _judge(claim: Claim, frame: pd.DataFrame, slopes: pd.DataFrame, budget: str):
    if budget not in claim.budgets:
        return not_testable(claim, claim.reason or f"not run at the {budget} budget")
    if claim.id == "noise_slope":
        return evaluate(claim, slopes["slope"].dropna().tolist())
    if claim.section == "stiff":
        case, route = claim.arms
        cell = frame[(frame["tag"] == "stiff") & (frame["case"] == case)]
        cell = cell[cell["route"] == route].sort_values("seed")
        if cell.empty:
            return not_testable(claim, f"no {route} runs on {case} at the {budget} budget")
        if claim.metric == "success rate":
            return evaluate(claim, cell["success"].tolist())
        return evaluate(claim, cell.loc[cell["success"] > 0, "traj_rel"].tolist())
    case, noise, keep = claim.arms
    cell = frame[(frame["tag"] == "table") & (frame["case"] == case)]
    cell = cell[(cell["noise"] == float(noise)) & (cell["keep"] == float(keep))]
    if cell.empty:
        return not_testable(claim, f"no runs on {case} at noise {noise} at the {budget} budget")
    finished = cell.loc[cell["success"] > 0, "traj_rel"].tolist()
    failed, verdict = len(cell) - len(finished), evaluate(claim, finished)
    if not finished:
        return replace(verdict, verdict="contradicted", reason=f"all {failed} runs diverged")
    if failed:  # a diverged run did not recover the system: the cell does not count as recovered
        outcome = "within noise" if verdict.verdict == "reproduced" else verdict.verdict
        reason = f"{verdict.reason}; {failed} of {len(cell)} runs diverged"
        verdict = replace(verdict, verdict=outcome, reason=reason)
    return verdict


def noise_plot(frame: pd.DataFrame, slopes: pd.DataFrame, report_dir: Path) -> str:
    """Relative error against noise per case (dense, log-log) with each case's fitted line."""
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = frame[(frame["tag"] == "table") & (frame["sampling"] == "dense") & (frame["noise"] > 0)]
    means = rows[rows["success"] > 0].groupby(["case", "noise"])["traj_rel"].mean()
    fits = slope_table(slopes).set_index("case")
    ax = (fig := Figure(figsize=(5.5, 4))).subplots()
    for case, pts in means.groupby(level="case"):
        x, label = pts.index.get_level_values("noise").to_numpy(), case
        if case in fits.index and math.isfinite(fits.loc[case, "k"]):
            k, b = fits.loc[case, "k"], fits.loc[case, "b"]
            label = f"{case}: k = {k:.2f}"
            ax.loglog(x, np.exp(b) * x**k, ":", color="gray", lw=0.8)
        ax.loglog(x, pts.to_numpy(), marker="o", label=label)
    ax.set(xlabel="observation noise (fraction of state scale)", ylabel="held-out relative MAE")
    if len(means):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(report_dir / "noise.png", dpi=90, metadata={"Software": None})
    return f"{report_dir.name}/noise.png"


def _record_link(path: Path) -> str:
    """A record's path from experiments/reports (`<report>_<budget>/records/...`), the same
    wherever the report is rendered."""
    parts = path.parts
    i = len(parts) - 1 - parts[::-1].index("records") if "records" in parts else 1
    return "/".join(parts[i - 1 :])


def portraits(jobs: Jobs, frame: pd.DataFrame) -> list[dict[str, str]]:
    """One phase portrait (true vs learned, saved by the run) per case: the lowest seed at 5 %
    noise dense for table systems (else the first successful run), a successful stiff route."""
    good = frame[frame["success"] > 0]
    good = good.assign(pref=(good["noise"] != 0.05) | (good["sampling"] != "dense"), _i=good.index)
    out = []
    for case, rows in good.sort_values(["pref", "seed", "_i"]).groupby("case", sort=True):
        row = rows.iloc[0]
        png = jobs[int(row["_i"])].output_dir / "plots" / "phase_portrait.png"
        if png.is_file():
            what = f"{row['solver_label']}, noise {row['noise']:g}, {row['sampling']}"
            out.append({"case": case, "path": _record_link(png), "what": what})
    return out


def trained(stiff: pd.DataFrame, case: str) -> str:
    """The routes on `case` that trained on every seed, then those on some ("k/n")."""
    rows = stiff[(stiff["case"] == case) & (stiff["ok"] > 0)]
    names = [f"{r.solver_label} ({r.ok}/{r.runs})" for r in rows.itertuples()]
    return ", ".join(names) or ("none" if (stiff["case"] == case).any() else "not run")


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    frame, claims = study_frame(jobs, TAGS.get(budget)), load_claims("dynamics")
    slopes = noise_slopes(frame)
    judged = [_judge(c, frame, slopes, budget) for c in claims.values()]
    write_claims(report_dir / "claims.json", judged)
    table, stiff = recovery_table(frame), stiff_table(frame)
    epochs = sorted(pd.to_numeric(frame["trainer.max_epochs"], errors="coerce").dropna().unique())
    return render(
        "dynamics.md.j2",
        budget=budget,
        headline=judged,
        labels={c.id: c.text for c in claims.values()},
        noise_png=noise_plot(frame, slopes, report_dir),
        rows=table.to_dict("records"),
        at5=table[(table["noise"] == 0.05) & (table["sampling"] == "dense")].to_dict("records"),
        slopes=slope_table(slopes).to_dict("records"),
        stiff=stiff.to_dict("records"),
        trained={c: trained(stiff, c) for c in ("robertson", "van_der_pol_mu1000")},
        portraits=portraits(jobs, frame),
        n_runs=len(frame),
        n_failed=int((frame["success"] == 0).sum()),
        seeds=frame["seed"].nunique(),
        epochs=[int(e) for e in epochs],
        devices=sorted(frame["device"].unique()),
        hours=frame["wall_s"].fillna(0).sum() / 3600,
    )


DYNAMICS = Reproduction.from_conf(
    "dynamics",
    "Dynamics recovery across systems, noise, sampling and stiffness (seed 003, issue 42)",
    build_report,
)

"""Report for issue 43 (seed 003): formula (7) at finite steps against the discrete (6).

Reads the training runs (one pandas frame; the arm of each sweep is its tag in
`conf/reproduce/formula.yaml`) and the two benchmark records (`bench/convergence.json` of
experiments/formula_convergence.py, `bench/cost.json` of experiments/formula_cost.py), judges
`conf/claims/formula.yaml` into `claims.json` and renders `templates/formula.md.j2`.

Statistical error (the yardstick of the finite-step error): the std over seeds of the CNF's
test NLL on a 2D target, the smaller over the two targets (the stricter bar).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from odelab.records.formula import Convergence, Cost  # noqa: E402
from odelab.reports.base import Jobs, Reproduction, conf_tags  # noqa: E402
from odelab.reports.claims import (  # noqa: E402
    evaluate,
    load_claims,
    not_testable,
    write_claims,
)
from odelab.reports.frame import runs_frame  # noqa: E402
from odelab.reports.records import load_record  # noqa: E402
from odelab.reports.render import render  # noqa: E402

TAGS = conf_tags("formula")
ARMS = {"cnf": "CNF, (7) + Hutchinson", "residual": "residual flow, (6)", "planar": "planar"}
FIXED = ("euler", "midpoint", "rk4")
# Formula (6) on the same field and N, and its gap to Euler-(7) (formula_convergence.py).
DISCRETE = {"residual6": "(6) vs exact", "gap67": "|(6) - Euler (7)|"}


def nll_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test NLL mean, std, n and 95 % t interval of the mean per (target, arm), with the
    mean step time and evaluation NFE."""
    ok = frame[frame["ok"]].copy()
    name = ok["data.name"] if "data.name" in ok else pd.Series(index=ok.index, dtype=object)
    ok["target"] = name.fillna(ok["data"] if "data" in ok else "8gaussians")
    ok["target"] = ok["target"].replace({"gmm": "gmm16"})
    cols = {
        "nll": "metric.test/nll",
        "step_s": "metric.train/step_time_epoch",
        "nfe": "metric.test/nfe_forward",
    }
    for col in cols.values():
        if col not in ok:
            ok[col] = math.nan
    grouped = ok.groupby(["target", "tag"], sort=False)
    table = grouped.agg(
        nll=(cols["nll"], "mean"),
        std=(cols["nll"], "std"),
        n=(cols["nll"], "count"),
        step_s=(cols["step_s"], "mean"),
        nfe=(cols["nfe"], "mean"),
    ).reset_index()
    half = [
        stats.t.ppf(0.975, n - 1) * s / math.sqrt(n) if n > 1 else math.nan
        for n, s in zip(table["n"], table["std"], strict=True)
    ]
    table["low"] = table["nll"] - half
    table["high"] = table["nll"] + half
    return table


def per_seed(frame: pd.DataFrame, target: str, arm: str) -> list[float]:
    """Test NLL of arm on target, ordered by seed (for paired contrasts)."""
    ok = frame[frame["ok"]]
    name = ok["data.name"] if "data.name" in ok else pd.Series(index=ok.index, dtype=object)
    tgt = name.fillna(ok["data"] if "data" in ok else "").replace({"gmm": "gmm16"})
    rows = ok[(tgt == target) & (ok["tag"] == arm)].sort_values("seed")
    return rows["metric.test/nll"].astype(float).tolist() if "metric.test/nll" in rows else []


def steps_below(conv: Convergence, field: str, method: str, bar: float) -> int | None:
    """The smallest N of the grid from which on the mean |log p error| stays below `bar`."""
    pts = sorted(
        (p for p in conv.points if p.field == field and p.method == method and p.steps),
        key=lambda p: p.steps,
    )
    found = None
    for p in reversed(pts):
        if p.error >= bar:
            break
        found = p.steps
    return found


def plots(conv: Convergence, cost: Cost, report_dir: Path) -> tuple[str, str]:
    """The convergence figure (error vs steps and vs NFE) and the cost-vs-D figure."""
    report_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for field, style in (("tanh", "-"), ("linear", "--")):
        for method in (*FIXED, "dopri5", *DISCRETE):
            pts = [p for p in conv.points if p.field == field and p.method == method]
            errors = [p.error for p in pts]
            if method in DISCRETE:  # (6) and its gap: against steps only, black and grey
                look = {"marker": "x", "ms": 4, "color": "k" if method == "residual6" else "grey"}
                label = DISCRETE[method] + f" ({field})"
            else:
                look, label = {"marker": "o", "ms": 3}, f"{method} ({field})"
            if method != "dopri5":
                axes[0].loglog([p.steps for p in pts], errors, style, label=label, **look)
            if method not in DISCRETE:
                axes[1].loglog([p.nfe for p in pts], errors, style, label=label, **look)
    axes[0].set(xlabel="steps N", ylabel="mean |log p error| (nats)")
    axes[0].legend(fontsize=6)
    axes[1].set(xlabel="NFE", ylabel="mean |log p error| (nats)")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    conv_png = report_dir / "convergence.png"
    fig.savefig(conv_png, dpi=90, metadata={"Software": None})
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    dims = [p.dim for p in cost.points]
    for key, label in (
        ("slogdet_s", "(6) slogdet"),
        ("exact_s", "(7) exact trace"),
        ("hutchinson_s", "(7) Hutchinson"),
    ):
        ax.loglog(dims, [getattr(p, key) for p in cost.points], marker="o", label=label)
    ax.set(xlabel="dimension D", ylabel="seconds per step (median)")
    ax.legend()
    fig.tight_layout()
    cost_png = report_dir / "cost.png"
    fig.savefig(cost_png, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return f"{report_dir.name}/{conv_png.name}", f"{report_dir.name}/{cost_png.name}"


def verdicts(frame: pd.DataFrame, budget: str, conv: Convergence | None, cost: Cost | None):
    out = []
    for claim in load_claims("formula").values():
        if budget not in claim.budgets:
            out.append(not_testable(claim, claim.reason or "not run at this budget"))
        elif claim.metric == "fitted_order":
            method = claim.arms[0]
            values = [o[method] for o in conv.fitted_order.values()] if conv else []
            out.append(evaluate(claim, values))
        elif claim.metric == "cost_ratio":
            dim = int(claim.arms[1])
            pts = [p for p in cost.points if p.dim == dim] if cost else []
            ref = claim.arms[0]
            out.append(evaluate(claim, [p.slogdet_s / getattr(p, f"{ref}_s") for p in pts]))
        else:
            target, a, b = claim.arms[0].split(":")[0], *(x.split(":")[1] for x in claim.arms)
            xa, xb = per_seed(frame, target, a), per_seed(frame, target, b)
            if len(xa) != len(xb) or not xa:
                out.append(not_testable(claim, "the two arms have different or no seeds"))
            else:
                out.append(evaluate(claim, xa, xb))
    return out


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    bench = getattr(jobs, "bench", {})
    conv = load_record("bench/convergence.json", Convergence, data=bench["convergence"])
    cost = load_record("bench/cost.json", Cost, data=bench["cost"])
    table = nll_table(frame)
    judged = verdicts(frame, budget, conv, cost)
    write_claims(report_dir / "claims.json", judged)
    conv_png, cost_png = plots(conv, cost, report_dir)
    cnf2d = table[(table["tag"] == "cnf") & (table["target"] != "gmm16")]
    pick = cnf2d.loc[cnf2d["std"].idxmin()] if cnf2d["std"].notna().any() else None
    bar = float(pick["std"]) if pick is not None else math.nan
    below = {m: {f: steps_below(conv, f, m, bar) for f in conv.fitted_order} for m in FIXED}
    by_dim = {p.dim: p for p in cost.points}
    d_show = 16 if 16 in by_dim else max(by_dim)
    ratios: dict[str, Any] = {
        "dim": d_show,
        "hutchinson": by_dim[d_show].slogdet_s / by_dim[d_show].hutchinson_s,
        "exact": by_dim[d_show].slogdet_s / by_dim[d_show].exact_s,
        "dmax": max(by_dim),
        "hutchinson_max": by_dim[max(by_dim)].slogdet_s / by_dim[max(by_dim)].hutchinson_s,
    }
    labels = {c.id: c.text for c in load_claims("formula").values()}
    gap = {
        f: max(
            (p for p in conv.points if p.field == f and p.method == "gap67"),
            key=lambda p: p.steps,
            default=None,
        )
        for f in conv.fitted_order
    }
    return render(
        "formula.md.j2",
        budget=budget,
        headline=judged,
        labels=labels,
        conv_png=conv_png,
        cost_png=cost_png,
        orders=conv.fitted_order,
        bar=bar,
        bar_target=pick["target"] if pick is not None else None,
        bar_n=int(pick["n"]) if pick is not None else 0,
        below=below,
        gap=gap,
        ratios=ratios,
        crossover=cost.crossover,
        dmin=min(by_dim),
        cost=cost,
        rows=[{**r, "arm": ARMS.get(r["tag"], r["tag"])} for r in table.to_dict("records")],
        n_runs=int(frame["ok"].sum()) if len(frame) else 0,
        n_failed=int((~frame["ok"]).sum()) if len(frame) else 0,
        train_h=float(frame["wall_s"].sum()) / 3600 if len(frame) else 0.0,
    )


FORMULA = Reproduction.from_conf(
    "formula",
    "Formula (7) at finite steps vs the discrete log-det (6) (seed 003, issue 43)",
    build_report,
)

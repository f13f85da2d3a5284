"""Typed benchmark records of `experiments/bench_cnf.py` and the CNF report's figures.

`bench_cnf_recipes.json` (FFJORD's recipe against the fast one, `RecipesRecord`) and
`bench_cnf_seminorm.json` (both adjoint norms on the same weights, `SeminormRecord`) are
validated on load with `records.load_record`; the figures are drawn from the runs frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import image as mpimg

from odelab.plotting import plt
from odelab.reports.records import load_record


@dataclass
class CurvePoint:
    epoch: int
    train_seconds: float
    val_nll: float


@dataclass
class RecipeRun:
    """One recipe trained on one target (`bench_cnf.py --part recipes`)."""

    run: str
    device: dict
    steps: int
    curve: list[CurvePoint]
    test_nll: float
    test_nfe: float
    nfe_per_step: float
    nfe_per_step_mean: float
    train_seconds: float
    wall_seconds: float


@dataclass
class Recipe:
    target: str
    ffjord: RecipeRun
    fast: RecipeRun
    threshold_val_nll: float
    test_nll_gap: float
    ffjord_seconds_to_threshold: float | None = None
    fast_seconds_to_threshold: float | None = None
    speedup: float | None = None
    speedup_vs_full_reference: float | None = None


@dataclass
class RecipesRecord:
    recipes: list[Recipe]
    margin: float = 0.05


@dataclass
class SeminormRun:
    """Both adjoint norms on one trained flow's weights (`bench_cnf.py --part seminorm`)."""

    run: str
    target: str
    seed: int
    experiment: str
    trained_sensitivity: str
    trained_with_seminorm: bool
    kinetic_weight: float
    train_steps: int
    batch_size: int
    batches: list[dict]
    nfe_forward_full: float
    nfe_backward_full: float
    nll_full: float
    nfe_forward_seminorm: float
    nfe_backward_seminorm: float
    nll_seminorm: float
    grad_rel_diff: float


@dataclass
class SeminormRecord:
    seminorm: list[SeminormRun]
    seminorm_device: dict = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """Per (target, trained weights): runs, backward NFE of both norms, the saving and
        how many gradients came out identical."""
        frame = pd.DataFrame([vars(r) for r in self.seminorm])
        frame["weights"] = [_weights(r) for r in self.seminorm]
        grouped = frame.groupby(["target", "weights"], sort=False)
        out = grouped.agg(
            runs=("run", "size"),
            full=("nfe_backward_full", "mean"),
            full_std=("nfe_backward_full", "std"),
            semi=("nfe_backward_seminorm", "mean"),
            semi_std=("nfe_backward_seminorm", "std"),
            same=("grad_rel_diff", lambda d: int((d == 0).sum())),
            largest=("grad_rel_diff", "max"),
        ).reset_index()
        out["saving"] = 1 - out["semi"] / out["full"]
        return out.to_dict("records")


def _weights(r: SeminormRun) -> str:
    label = f"{r.experiment}, {r.train_steps:,} steps"
    if r.kinetic_weight:
        label += f", lambda {r.kinetic_weight:g}"
    if r.trained_sensitivity == "adjoint":
        label += ", adjoint" + (" + seminorm" if r.trained_with_seminorm else "")
    return label


def load_bench(recipes: Any, seminorm: Any) -> tuple[RecipesRecord | None, SeminormRecord | None]:
    """The two benchmark records (parsed JSON or None), validated."""
    return (
        load_record("bench/bench_cnf_recipes.json", RecipesRecord, data=recipes)
        if recipes
        else None,
        load_record("bench/bench_cnf_seminorm.json", SeminormRecord, data=seminorm)
        if seminorm
        else None,
    )


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def figures(
    frame: pd.DataFrame, tables: dict[str, Any], recipes: RecipesRecord | None, out: Path
) -> dict[str, str]:
    """Every figure this budget's data allow, by section: path relative to the report."""
    made: dict[str, str] = {}
    if "targets" in tables:
        rows = frame[(frame.tag == "targets") & (frame.trace == "exact") & (frame.seed == "0")]
        columns = 4
        fig, axes = plt.subplots(
            math.ceil(len(rows) / columns), columns, figsize=(12.8, 4.0), squeeze=False
        )
        for ax in axes.ravel():
            ax.axis("off")
        for ax, row in zip(axes.ravel(), rows.itertuples(), strict=False):
            png = Path(row.job_dir) / "plots" / "density.png"
            if png.is_file():
                ax.imshow(mpimg.imread(png))
            ax.set_title(row.target, fontsize=7)
        made["targets"] = _save(fig, out / "targets_density.png")
    if "capacity" in tables:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        cap = pd.DataFrame(tables["capacity"])
        for (target, kind), part in cap.groupby([cap.target, cap.model.str.split().str[0]]):
            sizes = part.model.str.extract(r"=(\d+)")[0].astype(float)
            ax.errorbar(sizes, part.nll_mean, part.nll_std, marker="o", label=f"{kind}, {target}")
        ax.set_xlabel("K layers (planar) / M units (CNF)")
        ax.set_ylabel("test NLL (nats)")
        ax.legend(fontsize=7)
        made["capacity"] = _save(fig, out / "capacity.png")
    if "rnode" in tables:
        rn = pd.DataFrame(tables["rnode"])
        targets = list(dict.fromkeys(rn.target))
        fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6), squeeze=False)
        for ax, target in zip(axes[0], targets, strict=True):
            for learn, part in rn[rn.target == target].groupby("learn_t"):
                ax.plot(part.nfe_mean, part.nll_mean, marker="o", label=f"learned T: {learn}")
                for r in part.itertuples():
                    ax.annotate(f"{r.lam:g}", (r.nfe_mean, r.nll_mean), fontsize=7)
            ax.set(xlabel="NFE per training step", ylabel="test NLL", title=f"{target} (lambda)")
            ax.legend(fontsize=7)
        made["rnode"] = _save(fig, out / "rnode_front.png")
    if recipes:
        fig, axes = plt.subplots(
            1, len(recipes.recipes), figsize=(4.5 * len(recipes.recipes), 3.4), squeeze=False
        )
        for ax, r in zip(axes[0], recipes.recipes, strict=True):
            for name, run in (("ffjord", r.ffjord), ("fast", r.fast)):
                seconds = [max(c.train_seconds, 1e-3) for c in run.curve]
                ax.plot(seconds, [c.val_nll for c in run.curve], marker=".", label=name)
            ax.axhline(r.threshold_val_nll, color="k", lw=0.7, ls=":", label="threshold")
            low = min(c.val_nll for run in (r.ffjord, r.fast) for c in run.curve)
            ax.set(xscale="log", xlabel="training seconds", ylabel="val NLL", title=r.target)
            ax.set_ylim(low - 0.1, low + 1.5)
            ax.legend(fontsize=7)
        made["recipes"] = _save(fig, out / "recipes_curves.png")
    return made

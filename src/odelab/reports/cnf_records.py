"""The CNF report's figures (its records' schemas: `odelab.records.cnf`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import image as mpimg

from odelab.plotting import plt


def _lines(rows: pd.DataFrame, x: str, y: str, by: list[str], axes: tuple[str, str]) -> Any:
    """`y` (mean ± std) against `x`, one line per group of `by`."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, part in rows.groupby(by):
        ax.errorbar(part[x], part[y + "_mean"], part[y + "_std"], marker="o", label=", ".join(key))
        for r in part.itertuples() if "lam" in part else ():
            ax.annotate(f"{r.lam:g}", (getattr(r, x), getattr(r, f"{y}_mean")), fontsize=7)
    ax.set(xlabel=axes[0], ylabel=axes[1])
    ax.legend(fontsize=7)
    return fig


# Each section's figure file, in the report's folder.
FIGURES = {
    "targets": "targets_density.png",
    "capacity": "capacity.png",
    "rnode": "rnode_front.png",
    "recipes": "recipes_curves.png",
}


def figures(
    frame: pd.DataFrame,
    tables: dict[str, Any],
    recipes: Any,
    out: Path,
    stored: dict[str, str] | None = None,
) -> dict[str, str]:
    """Every figure this budget's data allow, by section: path relative to the report.

    Sections in `stored` (section -> link) are drawn by the part report that stores them, not
    again here: their links are returned as given."""
    stored = stored or {}
    tables = {k: v for k, v in tables.items() if k not in stored}
    recipes = None if "recipes" in stored else recipes
    made: dict[str, tuple[Any, str]] = {}
    if "targets" in tables:
        rows = frame[(frame.tag == "targets") & (frame.trace == "exact") & (frame.seed == "0")]
        fig, axes = plt.subplots(max(1, -(-len(rows) // 4)), 4, figsize=(12.8, 4), squeeze=False)
        plt.setp(axes.flat, frame_on=False, xticks=[], yticks=[])
        for ax, row in zip(axes.ravel(), rows.itertuples(), strict=False):
            png = Path(row.job_dir) / "plots" / "density.png"
            if png.is_file():
                ax.imshow(mpimg.imread(png))
            ax.set_title(row.target, fontsize=7)
        made["targets"] = fig, FIGURES["targets"]
    if "capacity" in tables:
        axes = ("K layers (planar) / M units (CNF)", "test NLL (nats)")
        fig = _lines(pd.DataFrame(tables["capacity"]), "size", "nll", ["kind", "target"], axes)
        made["capacity"] = fig, FIGURES["capacity"]
    if "rnode" in tables:
        axes = ("NFE per training step (labels: lambda)", "test NLL (nats)")
        fig = _lines(pd.DataFrame(tables["rnode"]), "nfe_mean", "nll", ["target", "learn_t"], axes)
        made["rnode"] = fig, FIGURES["rnode"]
    if recipes:
        fig, axes = plt.subplots(1, len(recipes.recipes), figsize=(9, 3.4), squeeze=False)
        for ax, r in zip(axes[0], recipes.recipes, strict=True):
            for name, run in (("ffjord", r.ffjord), ("fast", r.fast)):
                seconds = [max(c.train_seconds, 1e-3) for c in run.curve]
                ax.plot(seconds, [c.val_nll for c in run.curve], marker=".", label=name)
            ax.axhline(r.threshold_val_nll, color="k", lw=0.7, ls=":", label="threshold")
            low = min(c.val_nll for run in (r.ffjord, r.fast) for c in run.curve)
            ax.set(
                xscale="log", ylim=(low - 0.1, low + 1.5), xlabel="training seconds", title=r.target
            )
            ax.legend(fontsize=7)
        made["recipes"] = fig, FIGURES["recipes"]
    for fig, name in made.values():
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    links = {section: f"{out.name}/{name}" for section, (_, name) in made.items()} | stored
    return {section: links[section] for section in FIGURES if section in links}

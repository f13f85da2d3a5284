"""The robustness report's one figure: the paired differences per perturbation, per section."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def differences_figure(sections: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per section: ODENet - CNN and TisODE - ODENet per perturbation (mean and 95 %
    interval over paired seeds; hollow where not judged), the study's ODENet - CNN as crosses.
    Returns the path written, or None when no section has a contrast."""
    from odelab.plotting import plt

    shown = [s for s in sections if s["pairs"]]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(7.5, 2.3 * len(shown)), squeeze=False)
    for ax, sec in zip(axes[:, 0], shown, strict=True):
        rows = sec["table"][1:]  # the columns; the mean is the headline's
        for i, (a, b) in enumerate(sec["pairs"]):
            for j, row in enumerate(rows):
                v, fill = row["raw"][i], f"C{i}" if row["vs"][i].diff is not None else "none"
                if v.diff is not None:
                    low, high = (v.low, v.high) if v.low is not None else (v.diff, v.diff)
                    ax.errorbar(
                        [j + (i - 0.5) * 0.25],
                        [v.diff],
                        [[v.diff - low], [high - v.diff]],
                        fmt="o",
                        color=f"C{i}",
                        mfc=fill,
                        capsize=3,
                        ms=4,
                    )
            ax.plot([], [], "o", color=f"C{i}", label=f"{a} - {b} (ours)")
            paper = [(j, r["paper"]) for j, r in enumerate(rows) if r["paper"] is not None]
            if i == 0 and paper:
                ax.plot(*zip(*paper, strict=True), "x", color="k", label="ODENet - CNN (study)")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(len(sec["columns"])), sec["columns"], fontsize=7)
        ax.set_title(sec["title"], fontsize=9)
        ax.set_ylabel("points", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


def validation_figure(
    curves: dict[str, list[tuple[list[int], list[float], list[float]]]], path: Path
):
    """Validation accuracy over training per model (mean over seeds): clean (dashed) and under
    the noisy-validation sigma (solid), from the runs' histories. `curves`: model label ->
    per seed (epochs, clean, noisy). Returns the path written, or None without noisy curves."""
    import pandas as pd

    from odelab.plotting import plt

    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, (model, runs) in enumerate(curves.items()):
        for k, (name, style) in enumerate((("clean", "--"), ("noisy", "-"))):
            table = pd.DataFrame([dict(zip(r[0], r[1 + k], strict=True)) for r in runs])
            label = f"{model}, {name} (n={len(runs)})"
            ax.plot(table.columns, 100 * table.mean(), style, color=f"C{i}", label=label)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path

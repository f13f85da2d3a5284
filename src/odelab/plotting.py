"""Figures, and saving them to the run folder and the loggers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and loggers, never a window
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from odelab.data.irregular import IrregularBatch
    from odelab.data.trajectories import Trajectory


class Artifact(Protocol):
    """A plot output that is not a matplotlib figure (an animation, the arrays behind a plot)."""

    suffix: str

    def save(self, path: Path) -> None: ...


def save_and_log(
    figures: dict[str, Figure | Artifact], folder: Path, loggers: list[Logger], step: int = 0
) -> list[Path]:
    """Write each figure as `<folder>/<name>.png` and send it to loggers that take images;
    other artifacts are written as `<folder>/<name><suffix>`."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        if not isinstance(fig, Figure):
            path = folder / f"{name}{fig.suffix}"
            fig.save(path)
            paths.append(path)
            continue
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"plots/{name}", images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"plots/{name}", fig, global_step=step)
        plt.close(fig)
    return paths


def dynamics_figures(traj: Trajectory, pred: Tensor, learned_field: Tensor) -> dict[str, Figure]:
    """True vs learned trajectories over time, in phase space, and vector fields."""
    t, true, obs, n = traj.t.cpu(), traj.true.cpu(), traj.observed.cpu(), traj.n_train
    t_end = float(t[n - 1])

    fig_t, axes = plt.subplots(true.shape[-1], 1, figsize=(8, 2.2 * true.shape[-1]), sharex=True)
    for d, ax in enumerate(axes):
        ax.plot(t[:n], obs[:, d], ".", ms=2, alpha=0.4, color="gray", label="observed")
        ax.plot(t, true[:, d], "k-", lw=1.2, label="true")
        ax.plot(t, pred[:, d], "r--", lw=1.2, label="learned")
        if t.numel() > n:
            ax.axvline(t_end, color="b", lw=0.8, ls=":", label="end of training span")
        ax.set_ylabel(f"z{d}")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("t")
    fig_t.suptitle("Trajectories: true vs learned")

    fig_p, ax = plt.subplots(figsize=(5, 5))
    ax.plot(obs[:, 0], obs[:, 1], ".", ms=2, alpha=0.4, color="gray", label="observed")
    ax.plot(true[:, 0], true[:, 1], "k-", lw=1.2, label="true")
    ax.plot(pred[:, 0], pred[:, 1], "r--", lw=1.2, label="learned")
    ax.set_xlabel("z0")
    ax.set_ylabel("z1")
    ax.legend(fontsize=8)
    ax.set_title("Phase portrait")

    grid, size = traj.grid.cpu(), round(traj.grid.shape[0] ** 0.5)
    fig_v, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, field, title in (
        (axes[0], traj.grid_field.cpu(), "true field"),
        (axes[1], learned_field, "learned field"),
    ):
        xs, ys = grid[:, 0].reshape(size, size), grid[:, 1].reshape(size, size)
        u, v = field[:, 0].reshape(size, size), field[:, 1].reshape(size, size)
        ax.streamplot(
            xs.numpy(),
            ys.numpy(),
            u.numpy(),
            v.numpy(),
            color=(u**2 + v**2).sqrt().numpy(),
            cmap="viridis",
            density=1.0,
        )
        ax.plot(true[:n, 0], true[:n, 1], "k-", lw=0.8, alpha=0.6)
        ax.set_title(title)
    fig_v.suptitle("Vector field: true vs learned")
    return {"trajectories": fig_t, "phase_portrait": fig_p, "vector_field": fig_v}


def series_figures(
    batch: IrregularBatch,
    pred: Tensor,
    samples: Tensor | None,
    t_observed: float,
    model: str,
) -> dict[str, Figure]:
    """Observed, held-out and future points of a few test series with the model's predictions.

    With posterior samples: one figure of sample trajectories and one of the mean with a
    5-95 % band over samples (the extrapolation uncertainty).
    """
    t = batch.times.numpy()
    rows = len(batch)
    # Real data have no noise-free values: there the line is the record itself.
    target = batch.target[..., None]
    real = torch.equal(batch.truth * target, batch.values * target)
    truth_label = "series (all times)" if real else "noise-free"

    def panel(title: str, draw: object) -> Figure:
        fig, axes = plt.subplots(rows, 1, figsize=(8, 1.9 * rows), sharex=True, squeeze=False)
        for i, ax in enumerate(axes[:, 0]):
            ax.plot(t, batch.truth[i, :, 0], color="0.6", lw=1, ls="--", label=truth_label)
            draw(ax, i)  # type: ignore[operator]
            for mask, (color, marker, size), label in (
                (batch.context, ("k", "o", 3), "observed (encoder input)"),
                (batch.interp, ("tab:blue", "x", 5), "held out (interpolation)"),
                (batch.extrap, ("tab:red", "s", 3), "future (extrapolation)"),
            ):
                m = mask[i].numpy()
                ax.plot(
                    t[m],
                    batch.values[i, m, 0],
                    ls="none",
                    color=color,
                    marker=marker,
                    ms=size,
                    label=label,
                )
            ax.axvline(t_observed, color="k", lw=0.8, ls=":")
        axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
        axes[-1, 0].set_xlabel("t (dotted: end of the observation window)")
        fig.suptitle(title)
        fig.tight_layout()
        return fig

    if samples is None:

        def line(ax: plt.Axes, i: int) -> None:
            ax.plot(t, pred[i, :, 0], color="tab:green", lw=1.5, label="prediction")

        return {"predictions": panel(f"{model}: test series", line)}

    def sample_lines(ax: plt.Axes, i: int) -> None:
        for k in range(samples.shape[0]):
            ax.plot(
                t,
                samples[k, i, :, 0],
                color="tab:purple",
                lw=0.6,
                alpha=0.4,
                label="posterior samples" if k == 0 else None,
            )

    def band(ax: plt.Axes, i: int) -> None:
        lo, hi = torch.quantile(samples[:, i, :, 0], torch.tensor([0.05, 0.95]), dim=0)
        ax.fill_between(t, lo, hi, color="tab:green", alpha=0.25, label="5-95 % of samples")
        ax.plot(t, pred[i, :, 0], color="tab:green", lw=1.5, label="posterior mean")

    return {
        "posterior_samples": panel(f"{model}: posterior sample trajectories", sample_lines),
        "extrapolation": panel(f"{model}: mean prediction and uncertainty band", band),
    }

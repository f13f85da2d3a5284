"""Figures, and saving them to the run folder and the loggers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and loggers, never a window
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

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

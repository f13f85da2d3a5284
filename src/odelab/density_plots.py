"""Figures of 2D densities: true vs learned, samples vs data, and the flow between them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import animation
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from odelab.plotting import plt


@dataclass
class DensityGrid:
    """Densities on the square grid `axis` x `axis` (rows follow y)."""

    axis: Tensor
    learned: Tensor
    true: Tensor | None = None

    @property
    def cell_area(self) -> float:
        step = float(self.axis[1] - self.axis[0])
        return step * step

    def l1_error(self) -> float:
        """Integral of |p_true - p_learned| over the grid (0 = equal, 2 = disjoint)."""
        return float((self.true - self.learned).abs().sum() * self.cell_area)


def _show_density(ax: Axes, density: Tensor, extent: float, title: str) -> None:
    ax.imshow(
        density.numpy(), origin="lower", extent=(-extent, extent, -extent, extent), cmap="magma"
    )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter(ax: Axes, points: Tensor, extent: float, title: str, color: str = "C0") -> None:
    ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=1, alpha=0.4, color=color)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def density_figures(
    grid: DensityGrid, data: Tensor, frames: Tensor, title: str, extent: float
) -> dict[str, Figure]:
    """`density` (true or data histogram vs learned), `samples` (data vs model), `flow` (strip)."""
    fig_d, axes = plt.subplots(1, 2, figsize=(8, 4))
    if grid.true is not None:
        _show_density(axes[0], grid.true, extent, "true density")
    else:
        axes[0].hist2d(
            data[:, 0].numpy(),
            data[:, 1].numpy(),
            bins=60,
            range=[[-extent, extent], [-extent, extent]],
            cmap="magma",
        )
        axes[0].set_title("data histogram (density unknown)")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
    _show_density(axes[1], grid.learned, extent, "learned density")
    fig_d.suptitle(title)

    fig_s, axes = plt.subplots(1, 2, figsize=(8, 4))
    _scatter(axes[0], data, extent, "data", "k")
    _scatter(axes[1], frames[-1], extent, "model samples", "C3")
    fig_s.suptitle(title)

    n = frames.shape[0]
    fig_f, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4))
    colors = _colors_by_base(frames[0])
    for i, ax in enumerate(axes):
        ax.scatter(frames[i, :, 0].numpy(), frames[i, :, 1].numpy(), s=1, c=colors, cmap="hsv")
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("base" if i == 0 else ("data" if i == n - 1 else f"{i}/{n - 1}"), fontsize=9)
    fig_f.suptitle(f"{title}: flow from base to data")
    return {"density": fig_d, "samples": fig_s, "flow": fig_f}


def _colors_by_base(base: Tensor) -> np.ndarray:
    # Colour each particle by its base-space angle, so the flow's folding shows.
    return (base[:, 1].atan2(base[:, 0]).numpy() + 3.1416) / 6.2832


@dataclass
class FlowAnimation:
    """The particles moving from the base to the data, saved as an animated GIF."""

    frames: Tensor
    data: Tensor
    extent: float
    fps: int = 4
    suffix: str = ".gif"

    def save(self, path: Path) -> None:
        save_flow_gif(self.frames, self.data, path, self.extent, self.fps)


@dataclass
class GridArrays:
    """The learned (and true, where known) density on the plot grid, saved as `.npz`."""

    grid: DensityGrid
    suffix: str = ".npz"

    def save(self, path: Path) -> None:
        true = self.grid.true.numpy() if self.grid.true is not None else np.array([])
        np.savez(path, axis=self.grid.axis.numpy(), learned=self.grid.learned.numpy(), true=true)


def save_flow_gif(frames: Tensor, data: Tensor, path: Path, extent: float, fps: int = 4) -> Path:
    """An animated GIF of the particles moving from the base to the data."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(data[:, 0].numpy(), data[:, 1].numpy(), s=1, color="0.8")
    points = ax.scatter(
        frames[0, :, 0].numpy(),
        frames[0, :, 1].numpy(),
        s=1,
        c=_colors_by_base(frames[0]),
        cmap="hsv",
    )
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])

    def show(i: int) -> tuple[Artist]:
        points.set_offsets(frames[i].numpy())
        ax.set_title(f"frame {i}/{frames.shape[0] - 1}")
        return (points,)

    movie = animation.FuncAnimation(fig, show, frames=frames.shape[0], blit=False)
    movie.save(path, writer=animation.PillowWriter(fps=fps))
    plt.close(fig)
    return path

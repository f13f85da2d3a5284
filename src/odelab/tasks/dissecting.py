"""Classification with the Dissecting Neural ODEs family (Massaroli et al. 2020).

The image classifier's cross-entropy training, plus what the variants need: the
integral loss of `DissectedNODE` added to the terminal loss in training, the mean
learned horizon of adaptive-depth models, and for 2D inputs the figures of the
flow over depth and of the decision boundary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from odelab.checks import check_args, integer
from odelab.plotting import plt
from odelab.tasks.classification import ImageClassifier
from odelab.tasks.density import DensityEstimation

GRID_EXTENT = 2.0


class DissectingClassifier(ImageClassifier):
    """Cross-entropy classifier over a `DissectedNODE` (any net works; the extras switch off).

    Logs `<stage>/integral` (the trajectory loss, when the net has one) and
    `<stage>/horizon` (mean learned depth, adaptive depth only).

    Args:
        net: the classifier network.
        num_classes: number of classes.
        n_depths: panels of the flow-over-depth figure.
        n_plot_points: test points drawn in the figures.
        grid_size: points per axis of the decision-boundary grid.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 2,
        n_depths: int = 5,
        n_plot_points: int = 400,
        grid_size: int = 120,
        **optim: object,
    ):
        super().__init__(net, num_classes=num_classes, **optim)
        sizes = {"n_depths": n_depths, "n_plot_points": n_plot_points, "grid_size": grid_size}
        rules = {"n_depths": integer(1), "n_plot_points": integer(1), "grid_size": integer(2)}
        check_args("model", rules, sizes)
        self.n_depths, self.n_plot_points, self.grid_size = n_depths, n_plot_points, grid_size

    def _integral_weight(self, stage: str) -> float:
        """Weight of the trajectory loss: trained on only, so val/test score the terminal loss."""
        return float(getattr(self.net, "integral_weight", 0.0)) if stage == "train" else 0.0

    def forward_features(self, x: Tensor, y: Tensor, stage: str) -> Tensor:
        # The integral loss needs the labels inside the solve (the cross-entropy along it).
        return self.net(x, y) if self._integral_weight(stage) > 0 else self(x)

    def extra_loss(self, stage: str) -> Tensor | None:
        weight = self._integral_weight(stage)
        if weight <= 0:
            return None
        integral = self.net.last_integral.mean()
        self.log(f"{stage}/integral", integral, on_step=False, on_epoch=True, sync_dist=True)
        return weight * integral

    def log_extras(self, stage: str) -> None:
        horizon = getattr(self.net, "last_horizon", None)
        if getattr(self.net, "adaptive_depth", False) and horizon is not None:
            kw = {"on_step": False, "on_epoch": True, "sync_dist": True}
            self.log(f"{stage}/horizon", horizon.mean(), **kw)
            self.log(f"{stage}/horizon_std", horizon.std(), **kw)

    # --- figures (2D inputs) ---------------------------------------------------------

    def _test_points(self) -> tuple[Tensor, Tensor] | None:
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or getattr(datamodule, "dim", None) != 2:
            return None
        x, y = datamodule.test_set
        return x[: self.n_plot_points], y[: self.n_plot_points]

    def figures(self) -> dict[str, plt.Figure]:
        points = self._test_points()
        if points is None or not hasattr(self.net, "trajectory"):
            return {}
        x, y = points
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                path = self.net.trajectory(x.to(self.device), self.n_depths).cpu()
                axis = torch.linspace(-GRID_EXTENT, GRID_EXTENT, self.grid_size)
                gx, gy = torch.meshgrid(axis, axis, indexing="xy")
                grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(self.device)
                prob = torch.softmax(self(grid), dim=-1)[:, 1].reshape(gx.shape).cpu()
        finally:
            self.train(was_training)
        return {
            "flow_over_depth": _flow_figure(path, y),
            "decision_boundary": _boundary_figure(axis, prob, x, y),
        }


def _flow_figure(path: Tensor, labels: Tensor) -> plt.Figure:
    """The first two state components at evenly spaced depths, coloured by class."""
    n = path.shape[0]
    fig = plt.figure(figsize=(2.6 * n, 2.8))
    colours = np.where(labels.numpy() == 0, "tab:blue", "tab:orange")
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.scatter(path[i, :, 0], path[i, :, 1], c=colours, s=4)
        ax.set_title(f"depth {i / (n - 1):.2f} of the horizon", fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
    fig.suptitle("state (first two components) over depth", fontsize=9)
    fig.tight_layout()
    return fig


def _boundary_figure(axis: Tensor, prob: Tensor, x: Tensor, labels: Tensor) -> plt.Figure:
    fig = plt.figure(figsize=(4.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(axis, axis, prob, cmap="RdBu_r", vmin=0, vmax=1, shading="auto")
    ax.contour(axis, axis, prob, levels=[0.5], colors="k", linewidths=1)
    colours = np.where(labels.numpy() == 0, "tab:blue", "tab:orange")
    ax.scatter(x[:, 0], x[:, 1], c=colours, s=3, edgecolors="none")
    ax.set_aspect("equal")
    ax.set_title("P(outer shell) and the 0.5 boundary", fontsize=9)
    fig.colorbar(mesh, ax=ax)
    fig.tight_layout()
    return fig


class ConditionalDensityEstimation(DensityEstimation):
    """The data-controlled CNF (Massaroli et al. 2020, Figure 4): p(x | c) with one prior.

    Batches are (point, label); the label conditions the flow's field (`condition`),
    so one standard normal morphs into a different distribution per label. Metrics:
    `<stage>/nll`, the conditional NLL in nats. Figure: samples per label beside the
    data of that label.
    """

    def _condition(self, labels: Tensor) -> None:
        self.flow.dynamics.field.condition(labels)

    def points(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        self._condition(batch[1])
        return batch[0]

    def on_test_epoch_end(self) -> None:
        return None  # no closed-form conditional density on a grid

    def figures(self) -> dict[str, plt.Figure]:
        datamodule = self._datamodule()
        if datamodule is None:
            return {}
        points, labels = datamodule.test_set.tensors
        n = min(self.n_plot_samples, int((labels == 0).sum()))
        names = datamodule.names
        fig = plt.figure(figsize=(3.2 * len(names), 6.2))
        base = torch.randn(n, 2, generator=torch.Generator().manual_seed(0)).to(self.device)
        was_training = self.training
        self.eval()
        try:
            for k, name in enumerate(names):
                self._condition(torch.full((n,), k, device=self.device))
                with torch.no_grad():
                    samples = self.flow.sample(base).cpu()
                data = points[labels == k][:n]
                for row, (values, what) in enumerate(((data, "data"), (samples, "samples"))):
                    ax = fig.add_subplot(2, len(names), row * len(names) + k + 1)
                    ax.scatter(values[:, 0], values[:, 1], s=2)
                    ax.set_xlim(-self.grid_extent, self.grid_extent)
                    ax.set_ylim(-self.grid_extent, self.grid_extent)
                    ax.set_aspect("equal")
                    ax.set_title(f"{what}, c = {k} ({name})", fontsize=8)
        finally:
            self.train(was_training)
        fig.suptitle("one prior, one field, a different posterior per condition", fontsize=9)
        fig.tight_layout()
        return {"conditional_samples": fig}

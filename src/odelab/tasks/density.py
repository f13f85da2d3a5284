"""Maximum-likelihood density estimation with a normalizing flow (CNF or planar)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from odelab.checks import check_args, integer, positive
from odelab.density_plots import DensityGrid, FlowAnimation, GridArrays, density_figures
from odelab.errors import ConfigError
from odelab.plotting import Artifact
from odelab.tasks.base import OdelabTask


class DensityEstimation(OdelabTask):
    """Fits `flow` to samples by maximum likelihood; scores test NLL in nats.

    Training uses the flow's own trace estimator and the weighted regularizers;
    validation and test always use the exact trace, so the reported NLL is not
    noisy. Metrics: `nll` (val/test), `density_l1` (test, for targets with a
    known density: the L1 distance between true and learned densities on the
    plot grid, in [0, 2]); NFE and step time come from the callbacks.

    Args:
        flow: a `CNF` or `PlanarFlow` (anything with `log_prob`, `sample`, `trajectory`).
        kinetic_weight: weight of the integrated kinetic energy 1/2 |f|^2.
        jacobian_weight: weight of the integrated squared Jacobian Frobenius norm.
        grid_size: points per axis of the density grid.
        grid_extent: the grid spans [-extent, extent]^2.
        n_plot_samples: model samples drawn for the figures.
        n_frames: frames of the flow strip and animation.
    """

    def __init__(
        self,
        flow: nn.Module,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        grid_size: int = 100,
        grid_extent: float = 4.5,
        n_plot_samples: int = 2000,
        n_frames: int = 8,
        **optim: object,
    ):
        super().__init__(**optim)
        self.flow = flow
        self.weights = {"kinetic": kinetic_weight, "jacobian": jacobian_weight}
        for name, weight in self.weights.items():
            if weight < 0:
                raise ConfigError(f"model.{name}_weight must be >= 0, got {weight}")
            if weight > 0 and name not in getattr(flow, "supported_regularizers", ()):
                raise ConfigError(
                    f"model.{name}_weight={weight} but {type(flow).__name__} has no {name} "
                    f"regularizer; set model.{name}_weight=0"
                )
        check_args(
            "model",
            {
                "grid_size": integer(2),
                "grid_extent": positive(),
                "n_plot_samples": integer(1),
                "n_frames": integer(2),
            },
            {"grid_size": grid_size, "grid_extent": grid_extent, "n_frames": n_frames}
            | {"n_plot_samples": n_plot_samples},
        )
        self.grid_size, self.grid_extent = grid_size, grid_extent
        self.n_plot_samples, self.n_frames = n_plot_samples, n_frames

    @property
    def active_regularizers(self) -> tuple[str, ...]:
        return tuple(name for name, weight in self.weights.items() if weight > 0)

    def training_loss(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(loss, NLL, mean of each regularizer) of a training batch: the training
        estimator and the active regularizers, weighted."""
        out = self.flow.log_prob(x, regularizers=self.active_regularizers)
        nll = -out.log_prob.mean()
        terms = {name: integral.mean() for name, integral in out.regularizers.items()}
        loss = nll
        for name, value in terms.items():
            loss = loss + self.weights[name] * value
        return loss, nll, terms

    def points(self, batch: Any) -> Tensor:
        """The points of a batch to score; a conditional task also conditions its field here."""
        return batch

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        x = self.points(batch)
        if stage == "train":
            loss, nll, terms = self.training_loss(x)
        else:
            nll = -self.flow.log_prob(x, estimator="exact").log_prob.mean()
            loss, terms = nll, {}
        kw = {"batch_size": x.shape[0], "sync_dist": True}
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, **kw)
        self.log(f"{stage}/nll", nll, prog_bar=True, **kw)
        if stage == "train":
            self.log("train/loss", loss, **kw)
            if getattr(self.flow, "learn_t_end", False):
                self.log("train/t_end", self.flow.t_end.detach(), **kw)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _planar_data(self) -> bool:
        """Whether the data is 2D (the density grid and figures are 2D pictures)."""
        return getattr(self._datamodule(), "dim", 2) == 2

    def on_test_epoch_end(self) -> None:
        if not self._planar_data():
            return  # no grid in D > 2 (e.g. data=gmm); the test NLL is the metric there
        grid = self.density_grid()
        if grid.true is not None:
            self.log("test/density_l1", grid.l1_error(), sync_dist=True)

    # --- evaluation on a grid, sampling, figures ---------------------------------

    def _datamodule(self) -> L.LightningDataModule | None:
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    @torch.no_grad()
    def density_grid(self) -> DensityGrid:
        """True and learned densities on a square grid (true is None when unknown)."""
        size = self.grid_size
        if self._trainer is not None and self._trainer.fast_dev_run:
            size = min(size, 24)  # a smoke run checks the plumbing, not the picture
        axis = torch.linspace(-self.grid_extent, self.grid_extent, size)
        xs, ys = torch.meshgrid(axis, axis, indexing="xy")
        points = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).to(self.device)
        learned = torch.cat(
            [self.flow.log_prob(chunk, estimator="exact").log_prob for chunk in points.split(5000)]
        )
        datamodule = self._datamodule()
        true_fn = getattr(datamodule, "true_log_density", None)
        shape = (size, size)
        true = true_fn(points.cpu()).exp().reshape(shape) if true_fn is not None else None
        return DensityGrid(axis=axis, learned=learned.exp().cpu().reshape(shape), true=true)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        """`n` model samples (base -> data)."""
        z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)).to(self.device)
        return self.flow.sample(z)

    def figures(self) -> dict[str, Figure | Artifact]:
        datamodule = self._datamodule()
        if datamodule is None or getattr(datamodule, "test_set", None) is None:
            return {}
        if not self._planar_data():
            return {}
        was_training = self.training
        self.eval()
        try:
            grid = self.density_grid()
            z = torch.randn(self.n_plot_samples, 2, generator=torch.Generator().manual_seed(0)).to(
                self.device
            )
            with torch.no_grad():
                frames = self.flow.trajectory(z, self.n_frames).cpu()
        finally:
            self.train(was_training)
        data = datamodule.test_set[: self.n_plot_samples]
        figures: dict[str, Figure | Artifact] = dict(
            density_figures(grid, data, frames, title=datamodule.name, extent=self.grid_extent)
        )
        figures["density_grid"] = GridArrays(grid)
        figures["flow"] = FlowAnimation(frames, data, self.grid_extent)
        return figures

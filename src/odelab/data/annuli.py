"""Concentric annuli in d dimensions (Massaroli et al. 2020; Dupont et al. 2019's g_d).

Class 0 fills the ball |x| <= r_inner, class 1 the shell r_shell_low <= |x| <= r_shell_high.
No homeomorphism of R^d followed by a linear readout separates them, which is why a
vanilla Neural ODE fails on them and augmented or data-controlled ones do not.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from odelab.errors import ConfigError


def sample_annuli(
    n: int,
    dim: int,
    seed: int,
    r_inner: float = 0.5,
    r_shell: tuple[float, float] = (1.0, 1.5),
) -> tuple[Tensor, Tensor]:
    """`n` points, half in the inner ball (label 0), half in the shell (label 1), uniform in
    volume."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 2).long()
    direction = torch.randn(n, dim, generator=gen)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = torch.rand(n, generator=gen)
    # Uniform in volume: P(|x| <= r) grows as r^dim inside each region.
    low = torch.where(labels == 0, 0.0, r_shell[0]) ** dim
    high = torch.where(labels == 0, r_inner, r_shell[1]) ** dim
    radius = (low + u * (high - low)) ** (1.0 / dim)
    points = direction * radius[:, None]
    return points.to(torch.get_default_dtype()), labels


class AnnuliDataModule(L.LightningDataModule):
    """A seeded training set and fixed validation and test sets of concentric annuli.

    Args:
        dim: dimension of the points.
        n_train: training points (drawn from `seed`).
        n_val: validation points (drawn from `test_seed + 1`).
        n_test: test points (drawn from `test_seed`, the same for every run).
        batch_size: training points per step.
        eval_batch_size: points per evaluation batch.
        r_inner: radius of the inner ball (class 0).
        r_shell_low: inner radius of the shell (class 1).
        r_shell_high: outer radius of the shell.
        seed: seeds the training set and its order.
        test_seed: seeds the validation and test sets.
    """

    def __init__(
        self,
        dim: int = 2,
        n_train: int = 2000,
        n_val: int = 1000,
        n_test: int = 2000,
        batch_size: int = 128,
        eval_batch_size: int = 2000,
        r_inner: float = 0.5,
        r_shell_low: float = 1.0,
        r_shell_high: float = 1.5,
        seed: int = 0,
        test_seed: int = 2020,
    ):
        super().__init__()
        for key, value in {
            "dim": dim,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
        }.items():
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        if not 0 < r_inner < r_shell_low < r_shell_high:
            raise ConfigError(
                f"data radii must satisfy 0 < r_inner < r_shell_low < r_shell_high, got "
                f"{r_inner}, {r_shell_low}, {r_shell_high}"
            )
        self.dim, self.n_train, self.n_val, self.n_test = dim, n_train, n_val, n_test
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.radii = (r_inner, (r_shell_low, r_shell_high))
        self.seed, self.test_seed = seed, test_seed
        self.splits: dict[str, TensorDataset] = {}

    def _draw(self, n: int, seed: int) -> TensorDataset:
        return TensorDataset(*sample_annuli(n, self.dim, seed, *self.radii))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = {
            "train": self._draw(self.n_train, self.seed),
            "val": self._draw(self.n_val, self.test_seed + 1),
            "test": self._draw(self.n_test, self.test_seed),
        }

    @property
    def test_set(self) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.splits["test"].tensors  # type: ignore[return-value]

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.splits["train"], batch_size=self.batch_size, shuffle=True, generator=gen
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.eval_batch_size)

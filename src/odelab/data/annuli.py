"""Concentric annuli in d dimensions (Massaroli et al. 2020; Dupont et al. 2019's g_d).

Class 0 fills the ball |x| <= r_inner, class 1 the shell r_shell_low <= |x| <= r_shell_high.
No homeomorphism of R^d followed by a linear readout separates them, which is why a
vanilla Neural ODE fails on them and augmented or data-controlled ones do not.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from odelab.data.loading import SplitLoaders
from odelab.errors import ConfigError

# Validation and test points come from generators seeded in [EVAL_STREAM, 2 * EVAL_STREAM),
# training points from [0, EVAL_STREAM): no training seed can reproduce an evaluation set
# (before this split, `seed=2020` drew exactly the test set of `test_seed=2020`). The CPU
# generator keeps only a seed's low 32 bits, so both halves lie below 2**32.
EVAL_STREAM = 1 << 31


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


class AnnuliDataModule(SplitLoaders, L.LightningDataModule):
    """A seeded training set and fixed validation and test sets of concentric annuli.

    The committed `dissecting_cpu` records were run before the evaluation stream existed:
    their validation and test sets were drawn from `test_seed + 1` and `test_seed`
    directly (2020 and 2021, disjoint from their training seeds 0, 1, 2); their training
    sets and order are the ones drawn here for the same seed.

    Args:
        dim: dimension of the points.
        n_train: training points (drawn from `seed`).
        n_val: validation points (drawn from `EVAL_STREAM + test_seed + 1`).
        n_test: test points (drawn from `EVAL_STREAM + test_seed`, the same for every run).
        batch_size: training points per step.
        eval_batch_size: points per evaluation batch.
        r_inner: radius of the inner ball (class 0).
        r_shell_low: inner radius of the shell (class 1).
        r_shell_high: outer radius of the shell.
        seed: seeds the training set and its order, in [0, EVAL_STREAM).
        test_seed: seeds the validation and test sets, in [0, EVAL_STREAM - 1).
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches (for GPU copies).
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
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
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        self.init_loaders(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers)
        for key, value in {
            "dim": dim,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
        }.items():
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        if not 0 < r_inner < r_shell_low < r_shell_high:
            raise ConfigError(
                f"data radii must satisfy 0 < r_inner < r_shell_low < r_shell_high, got "
                f"{r_inner}, {r_shell_low}, {r_shell_high}"
            )
        if not 0 <= seed < EVAL_STREAM:
            raise ConfigError(f"seed={seed} must be in [0, 2**31) for the annuli data")
        if not 0 <= test_seed < EVAL_STREAM - 1:
            raise ConfigError(f"data.test_seed={test_seed} must be in [0, 2**31 - 1)")
        self.dim, self.n_train, self.n_val, self.n_test = dim, n_train, n_val, n_test
        self.radii = (r_inner, (r_shell_low, r_shell_high))
        self.seed, self.test_seed = seed, test_seed

    def _draw(self, n: int, seed: int) -> TensorDataset:
        return TensorDataset(*sample_annuli(n, self.dim, seed, *self.radii))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = {
            "train": self._draw(self.n_train, self.seed),
            "val": self._draw(self.n_val, EVAL_STREAM + self.test_seed + 1),
            "test": self._draw(self.n_test, EVAL_STREAM + self.test_seed),
        }

    @property
    def test_set(self) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.splits["test"].tensors  # type: ignore[return-value]

    @property
    def shuffle_generator(self) -> torch.Generator:
        # A fresh generator per training loader: every loader made for the same seed
        # shuffles the points in the same order.
        return torch.Generator().manual_seed(self.seed)

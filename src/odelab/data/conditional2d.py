"""Labelled toy 2D targets for a data-controlled CNF: label k marks points of target k."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import TensorDataset

from odelab.checks import check_args, integer
from odelab.data.loading import SplitLoaders
from odelab.data.toy2d import SAMPLERS, sample
from odelab.errors import ConfigError


def labelled(names: list[str], n_each: int, seed: int) -> TensorDataset:
    """`n_each` points of every target (seeded per target), labelled by the target's index."""
    points = [sample(name, n_each, seed * 1009 + k) for k, name in enumerate(names)]
    labels = [torch.full((n_each,), k, dtype=torch.long) for k in range(len(names))]
    return TensorDataset(torch.cat(points), torch.cat(labels))


class ConditionalToy2DDataModule(SplitLoaders, L.LightningDataModule):
    """(point, target index) pairs from several toy 2D targets; fixed validation and test sets.

    Args:
        names: the targets, one per condition label (see `odelab.data.toy2d.SAMPLERS`).
        n_train: training points per target.
        n_val: validation points per target.
        n_test: test points per target (from `test_seed`, the same for every run).
        batch_size: training points per step.
        eval_batch_size: points per evaluation batch.
        seed: seeds the training set and its order.
        test_seed: seeds the validation and test sets.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches (for GPU copies).
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
    """

    def __init__(
        self,
        names: list[str] | None = None,
        n_train: int = 5000,
        n_val: int = 1000,
        n_test: int = 2000,
        batch_size: int = 256,
        eval_batch_size: int = 2000,
        seed: int = 0,
        test_seed: int = 2024,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        self.init_loaders(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers)
        self.names = list(names or ["8gaussians", "2spirals"])
        unknown = [n for n in self.names if n not in SAMPLERS]
        if unknown or len(self.names) < 2:
            raise ConfigError(
                f"data.names={self.names} needs two or more toy 2D targets from {sorted(SAMPLERS)}"
            )
        for key, value in (
            ("n_train", n_train),
            ("n_val", n_val),
            ("n_test", n_test),
        ):
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        self.name = " | ".join(self.names)
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        check_args("data", {"seed": integer(0), "test_seed": integer(0)}, locals())
        self.seed, self.test_seed = seed, test_seed

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            seeds = {"train": self.seed + 7919, "val": self.test_seed + 1, "test": self.test_seed}
            self.splits = {k: labelled(self.names, n, seeds[k]) for k, n in self.sizes.items()}

    @property
    def test_set(self) -> TensorDataset:
        self.setup()
        return self.splits["test"]

    @property
    def shuffle_generator(self) -> torch.Generator:
        # A fresh generator per training loader: every loader made for the same seed
        # shuffles the points in the same order.
        return torch.Generator().manual_seed(self.seed)

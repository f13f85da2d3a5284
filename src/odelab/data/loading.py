"""DataLoader options that every DataModule takes from its data config.

Keys: `num_workers`, `pin_memory`, `persistent_workers`, passed unchanged to the
training DataLoader (and to evaluation loaders where those iterate a dataset).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from odelab.errors import ConfigError


def loader_options(
    num_workers: int, pin_memory: bool, persistent_workers: bool
) -> dict[str, object]:
    """The DataLoader keyword arguments of a data config, checked.

    Rejects options that torch would refuse (or silently ignore) with a message
    naming the key to fix.
    """
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
    if persistent_workers and num_workers == 0:
        raise ConfigError(
            "data.persistent_workers=true needs worker processes: set data.num_workers > 0 "
            "or data.persistent_workers=false"
        )
    return {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers,
    }


class SplitLoaders:
    """train / val / test DataLoaders over `self.splits` for a LightningDataModule.

    The data module sets `splits` (split name -> Dataset), `batch_size` (training),
    `eval_batch_size` and `loader_kwargs` (from `loader_options`); `collate_fn` may be
    set too. Training batches are shuffled, evaluation batches are not; a data module that
    sets `shuffle_generator` shuffles with it (a seeded order), otherwise torch's global
    generator decides.
    """

    splits: dict[str, Dataset]
    batch_size: int
    eval_batch_size: int
    loader_kwargs: dict[str, Any]
    collate_fn: Any = None
    shuffle_generator: torch.Generator | None = None

    def init_loaders(
        self,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
    ) -> None:
        """Check and keep the batch sizes and DataLoader options; no splits yet."""
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(
                f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size} "
                f"and {eval_batch_size}"
            )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.loader_kwargs = loader_options(num_workers, pin_memory, persistent_workers)
        self.splits = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch = self.batch_size if split == "train" else self.eval_batch_size
        return DataLoader(
            self.splits[split],
            batch_size=batch,
            shuffle=shuffle,
            generator=self.shuffle_generator if shuffle else None,
            collate_fn=self.collate_fn,
            **self.loader_kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

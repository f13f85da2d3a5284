"""SVHN (Street View House Numbers, cropped digits) from torchvision's .mat files.

Images are served as uint8 (B, 3, 32, 32) and become floats in [0, 1] after they reach
the device: normalisation belongs to the model, so attacks and noise act on pixels.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from odelab.data.loading import SplitLoaders
from odelab.errors import ConfigError, DataMissingError

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def load_svhn(root: Path, split: str, download: bool = False) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 of one split.

    The files store X as (32, 32, 3, N) and the digit 0 as label 10.
    """
    path = root / SPLIT_FILES[split]
    if not path.is_file() and download:
        import torchvision.datasets as tvd

        tvd.SVHN(str(root), split=split, download=True)
    if not path.is_file():
        raise DataMissingError(
            f"SVHN {split} file {SPLIT_FILES[split]} not found in {root}. Fix: set "
            "data.root=<folder "
            "holding train_32x32.mat and test_32x32.mat>, or data.download=true on a machine with "
            "network."
        )
    from scipy.io import loadmat

    mat = loadmat(path)
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)).astype(np.uint8))
    labels = torch.from_numpy(mat["y"].reshape(-1).astype(np.int64)) % 10
    return images, labels


class SVHNDataModule(SplitLoaders, L.LightningDataModule):
    """SVHN classification data held in memory as uint8.

    Args:
        root: folder with train_32x32.mat and test_32x32.mat (torchvision's layout).
        download: fetch with torchvision when missing (needs network).
        val_size: images held out of the training split for validation.
        train_subset: use only this many training images; None = all.
        test_subset: use only the first this many test images; None = all.
        batch_size: training batch size; evaluation uses `eval_batch_size`.
        num_workers, pin_memory, persistent_workers: DataLoader settings.
        seed: seeds the train/val split.
        augment: accepted for a common interface with the MNIST data; must be false.
        dataset: the data set's name as reports and checks read it (`data.dataset`, as
            for the MNIST data); must be "svhn".
    """

    num_classes = 10
    image_shape = (3, 32, 32)

    def __init__(
        self,
        root: str = "data/svhn",
        download: bool = False,
        val_size: int = 5000,
        train_subset: int | None = None,
        test_subset: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
        augment: bool = False,
        dataset: str = "svhn",
    ):
        super().__init__()
        if dataset != "svhn":
            raise ConfigError(f"data.dataset={dataset!r} with the SVHN data; set data.dataset=svhn")
        if augment:
            raise ConfigError("data.augment=true is not supported for SVHN; set data.augment=false")
        if val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {val_size}")
        self.root, self.download = Path(root), download
        self.val_size, self.train_subset, self.test_subset = val_size, train_subset, test_subset
        self.seed = seed
        self.init_loaders(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = load_svhn(self.root, "train", self.download)
        test_images, test_labels = load_svhn(self.root, "test", self.download)
        if self.val_size >= len(labels):
            raise ConfigError(f"data.val_size must be < {len(labels)} SVHN training images")
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        if self.train_subset is not None:
            train_idx = train_idx[: self.train_subset]
        test_end = len(test_labels) if self.test_subset is None else self.test_subset
        self.splits = {
            "train": TensorDataset(images[train_idx], labels[train_idx]),
            "val": TensorDataset(images[val_idx], labels[val_idx]),
            "test": TensorDataset(test_images[:test_end], test_labels[:test_end]),
        }

    def describe(self) -> str:
        """One line naming the data behind the numbers, for reports."""
        return "svhn (" + ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()) + ")"

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return images.float().div_(255.0), labels

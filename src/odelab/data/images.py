"""MNIST-style image classification data: MNIST, Fashion-MNIST and the offline MNIST test set.

Images are served as uint8 and turned into floats in [0, 1] after they reach the
device: normalisation belongs to the model, so attacks and noise act on pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from odelab.data.idx import find_idx, read_idx
from odelab.data.loading import SplitLoaders
from odelab.errors import ConfigError, DataMissingError

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class ImageSource:
    """Where one dataset's IDX files live and how torchvision fetches them."""

    name: str
    subdir: str  # torchvision's layout: <root>/<subdir>/raw
    torchvision_class: str


SOURCES = {
    "mnist": ImageSource("mnist", "MNIST", "MNIST"),
    "fashion_mnist": ImageSource("fashion_mnist", "FashionMNIST", "FashionMNIST"),
}


def _locate(root: Path, source: ImageSource, split: str) -> tuple[Path, Path] | None:
    # Accept torchvision's layout and a flat folder (Debian's dataset packages, ../shared).
    for folder in (root / source.subdir / "raw", root):
        found = [find_idx(folder, stem) for stem in SPLIT_FILES[split]]
        if all(found):
            return found[0], found[1]
    return None


def load_split(
    root: Path, source: ImageSource, split: str, download: bool
) -> tuple[Tensor, Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split."""
    paths = _locate(root, source, split)
    if paths is None and download:
        import torchvision.datasets as tvd

        getattr(tvd, source.torchvision_class)(str(root), train=split == "train", download=True)
        paths = _locate(root, source, split)
    if paths is None:
        raise DataMissingError(
            f"{source.name} {split} files ({', '.join(SPLIT_FILES[split])}) not found under "
            f"{root} or {root / source.subdir / 'raw'}. Fix: set data.root=<folder holding them>, "
            "or data.download=true on a machine with network, or use the offline set "
            "data=mnist_t10k (MNIST test set split into train/val/test)."
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1]).long()
    return images, labels


def _split(n: int, sizes: list[int], seed: int) -> list[Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for size in sizes:
        out.append(perm[start : start + size])
        start += size
    return out


class ImageDataModule(SplitLoaders, L.LightningDataModule):
    """28x28 grayscale classification data as uint8 tensors held in memory.

    Args:
        dataset: "mnist" or "fashion_mnist".
        root: folder with the IDX files (flat, or torchvision's <root>/MNIST/raw).
        download: fetch with torchvision when the files are missing (needs network).
        offline_test_split: use only the official test set, split into
            train/val/test of the sizes below (for machines without the training set).
        val_size: images held out of the training split for validation.
        test_size: with `offline_test_split`, images kept for testing.
        train_subset: use only this many training images (quick runs); None = all.
        batch_size: training batch size; evaluation uses `eval_batch_size`.
        augment: random-crop augmentation (pad 4, crop 28) on training batches.
        num_workers, pin_memory, persistent_workers: DataLoader settings.
        seed: seeds the splits.
    """

    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        download: bool = False,
        offline_test_split: bool = False,
        val_size: int = 5000,
        test_size: int = 2000,
        train_subset: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        augment: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if dataset not in SOURCES:
            raise ConfigError(f"data.dataset={dataset!r}; choose one of {sorted(SOURCES)}")
        if val_size < 0 or test_size < 0 or (train_subset is not None and train_subset < 1):
            raise ConfigError(
                "data.val_size and data.test_size must be >= 0, data.train_subset >= 1"
            )
        self.source = SOURCES[dataset]
        self.root, self.download = Path(root), download
        self.offline_test_split = offline_test_split
        self.val_size, self.test_size, self.train_subset = val_size, test_size, train_subset
        self.augment, self.seed = augment, seed
        self.init_loaders(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.offline_test_split:
            images, labels = load_split(self.root, self.source, "test", self.download)
            n_train = len(labels) - self.val_size - self.test_size
            if n_train < 1:
                raise ConfigError(
                    f"data.val_size + data.test_size must be < {len(labels)} images of the "
                    "offline set"
                )
            parts = _split(len(labels), [n_train, self.val_size, self.test_size], self.seed)
            train_idx, val_idx, test_idx = parts
            splits = {
                "train": (images, labels, train_idx),
                "val": (images, labels, val_idx),
                "test": (images, labels, test_idx),
            }
        else:
            images, labels = load_split(self.root, self.source, "train", self.download)
            test_images, test_labels = load_split(self.root, self.source, "test", self.download)
            n_train = len(labels) - self.val_size
            train_idx, val_idx = _split(len(labels), [n_train, self.val_size], self.seed)
            splits = {
                "train": (images, labels, train_idx),
                "val": (images, labels, val_idx),
                "test": (test_images, test_labels, torch.arange(len(test_labels))),
            }
        if self.train_subset is not None:
            images, labels, idx = splits["train"]
            splits["train"] = (images, labels, idx[: self.train_subset])
        self.splits = {k: TensorDataset(x[i], y[i]) for k, (x, y, i) in splits.items()}

    def describe(self) -> str:
        """One line naming the data behind the numbers, for reports."""
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        origin = "official test set split" if self.offline_test_split else "official train/test"
        return f"{self.source.name} ({origin}: {sizes})"

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        images, labels = batch
        x = images.unsqueeze(1).float().div_(255.0)  # (B, 1, 28, 28) in [0, 1]
        if self.augment and self.trainer is not None and self.trainer.training:
            x = random_crop(x, padding=4)
        return x, labels


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Pad each image with zeros and cut a random window of the original size back out."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
    batch_idx = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
    return padded[batch_idx, 0, rows, cols].unsqueeze(1)

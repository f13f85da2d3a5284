"""Image data: IDX parsing against files we write, offline splits, clear errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from odelab.data.idx import read_idx
from odelab.data.images import ImageDataModule, random_crop
from odelab.errors import DataMissingError


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", s) for s in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def fake_mnist(folder: Path, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_read_idx_round_trips(tmp_path: Path) -> None:
    images, labels = fake_mnist(tmp_path)
    assert torch.equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    assert torch.equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"), labels.to(torch.uint8))


def test_offline_split_is_disjoint_and_sized(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "MNIST" / "raw", n=100)
    dm = ImageDataModule(root=str(tmp_path), offline_test_split=True, val_size=20, test_size=30)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [50, 20, 30]
    assert "official test set split" in dm.describe()


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    dm = ImageDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DataMissingError, match="data.download=true.*data=mnist_t10k"):
        dm.setup()


def test_real_offline_mnist_test_set_loads() -> None:
    root = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
    if not root.is_dir():
        pytest.skip("../shared/data/mnist is not beside this checkout")
    dm = ImageDataModule(root=str(root), offline_test_split=True, val_size=1000, test_size=2000)
    dm.setup()
    x, y = dm.splits["train"].tensors
    assert x.shape == (7000, 28, 28) and x.dtype == torch.uint8
    assert set(y.unique().tolist()) == set(range(10))


def test_random_crop_is_a_shift_of_the_image() -> None:
    x = torch.rand(8, 1, 28, 28)
    out = random_crop(x, padding=4)
    assert out.shape == x.shape
    for img, crop in zip(x, out, strict=False):
        # Every crop equals the zero-padded image shifted by some (dy, dx) in [-4, 4].
        padded = torch.nn.functional.pad(img, (4,) * 4)
        assert any(
            torch.equal(padded[:, dy : dy + 28, dx : dx + 28], crop)
            for dy in range(9)
            for dx in range(9)
        )

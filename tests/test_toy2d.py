"""Toy 2D samplers: shapes, seeding, and the closed-form densities."""

from __future__ import annotations

import pytest
import torch

from odelab.data.toy2d import SAMPLERS, TRUE_LOG_DENSITIES, Toy2DDataModule, sample
from odelab.errors import ConfigError


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_shape_and_seed(name: str) -> None:
    a, b, c = sample(name, 300, seed=5), sample(name, 300, seed=5), sample(name, 300, seed=6)
    assert a.shape == (300, 2)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(TRUE_LOG_DENSITIES))
def test_true_density_integrates_to_one_and_fits_samples(name: str) -> None:
    axis = torch.linspace(-5, 5, 401, dtype=torch.float64)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    density = TRUE_LOG_DENSITIES[name](grid).exp()
    cell = float(axis[1] - axis[0]) ** 2
    assert abs(float(density.sum()) * cell - 1) < 0.01
    # The samples' histogram agrees with the density on coarse cells.
    points = sample(name, 200_000, seed=0).double()
    edges = torch.linspace(-5, 5, 11, dtype=torch.float64)
    counts = torch.histogramdd(points, bins=[edges, edges]).hist / len(points)
    mass = torch.zeros(10, 10, dtype=torch.float64)
    ix = torch.bucketize(grid[:, 0].contiguous(), edges[1:-1])
    iy = torch.bucketize(grid[:, 1].contiguous(), edges[1:-1])
    mass.index_put_((ix, iy), density * cell, accumulate=True)
    assert (counts - mass).abs().max() < 0.01


def test_datamodule_test_set_is_fixed_across_training_seeds() -> None:
    a, b = (
        Toy2DDataModule("moons", seed=0, n_test=100),
        Toy2DDataModule("moons", seed=1, n_test=100),
    )
    a.setup(), b.setup()
    assert torch.equal(a.test_set, b.test_set)
    assert not torch.equal(next(iter(a.train_dataloader())), next(iter(b.train_dataloader())))


def test_unknown_target_names_the_key() -> None:
    with pytest.raises(ConfigError, match="data.name"):
        Toy2DDataModule("spiralz")

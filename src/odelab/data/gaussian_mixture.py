"""A Gaussian mixture in D dimensions with a known density (issue 43's higher-dim target).

K isotropic components of std `std` with means drawn once from N(0, spread^2 I) by
`mixture_seed`; equal weights. Training batches are fresh and seeded like the toy 2D targets;
validation and test sets are fixed by `test_seed`. The exact log-density gives the entropy, so
a report can state NLL minus the entropy (the KL divergence to the target).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from odelab.data.toy2d import FreshSamples
from odelab.errors import ConfigError


class GaussianMixture:
    """The mixture: means, std, sampling and the exact log-density."""

    def __init__(self, dim: int, components: int, std: float, spread: float, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.means = spread * torch.randn(components, dim, generator=gen)
        self.dim, self.std = dim, std

    def sample(self, n: int, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        k = torch.randint(len(self.means), (n,), generator=gen)
        x = self.means[k] + self.std * torch.randn(n, self.dim, generator=gen)
        return x.to(torch.get_default_dtype())

    def log_density(self, x: Tensor) -> Tensor:
        sq = (x[:, None, :] - self.means.to(x)[None]).pow(2).sum(-1)  # (N, K)
        log_comp = -0.5 * sq / self.std**2 - self.dim * math.log(self.std * math.sqrt(2 * math.pi))
        return torch.logsumexp(log_comp, dim=1) - math.log(len(self.means))


class GaussianMixtureDataModule(FreshSamples):
    """Fresh training batches from the mixture; fixed validation and test sets.

    Args:
        dim: data dimension D.
        components: number of mixture components K.
        std: component std.
        spread: std of the component means.
        mixture_seed: fixes the means (the target), the same for every training seed.
        batch_size, batches_per_epoch, n_val, n_test, eval_batch_size, seed, test_seed: as in
            `Toy2DDataModule`.
    """

    def __init__(
        self,
        dim: int = 16,
        components: int = 8,
        std: float = 0.5,
        spread: float = 1.5,
        mixture_seed: int = 43,
        batch_size: int = 256,
        batches_per_epoch: int = 100,
        n_val: int = 2000,
        n_test: int = 10_000,
        eval_batch_size: int = 5000,
        seed: int = 0,
        test_seed: int = 2024,
    ):
        super().__init__()
        for key, value in (
            ("dim", dim),
            ("components", components),
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("n_val", n_val),
            ("n_test", n_test),
            ("eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        if not std > 0:
            raise ConfigError(f"data.std must be > 0, got {std}")
        self.mixture = GaussianMixture(dim, components, std, spread, mixture_seed)
        self.name, self.dim = f"gmm{dim}", dim
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.n_val, self.n_test, self.eval_batch_size = n_val, n_test, eval_batch_size
        self.seed, self.test_seed = seed, test_seed
        self.val_set: Tensor | None = None
        self.test_set: Tensor | None = None

    def draw(self, n: int, seed: int) -> Tensor:
        return self.mixture.sample(n, seed)

    def entropy(self, n: int = 100_000, seed: int = 7) -> float:
        """Monte Carlo entropy -E log p(x) of the target (nats), the floor of any test NLL."""
        return float(-self.mixture.log_density(self.mixture.sample(n, seed)).mean())


__all__ = ["GaussianMixture", "GaussianMixtureDataModule"]

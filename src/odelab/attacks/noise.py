"""Random Gaussian pixel noise, the study's non-adversarial perturbation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from odelab.attacks.base import Attack


class GaussianNoise(Attack):
    """x + N(0, (sigma/255)^2) per pixel, clipped to [0, 1].

    Args:
        sigma: noise standard deviation on the 0-255 pixel scale (the study's sigma).
        seed: seeds a private generator so evaluations repeat exactly; None draws
            from the global generator (training augmentation).
    """

    kind = "gaussian"

    def __init__(self, sigma: float, seed: int | None = 0):
        super().__init__(sigma)
        self.seed = seed
        self._generator: torch.Generator | None = None

    def generator(self) -> torch.Generator | None:
        """The private generator (None with `seed=None`), created on first use."""
        if self.seed is not None and self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        generator = self.generator()
        if generator is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.shape, generator=generator).to(x)
        return (x + noise * (self.strength / 255.0)).clamp(0.0, 1.0)

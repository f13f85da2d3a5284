"""Square attack (Andriushchenko et al. 2020), L-inf: a gradient-free check on gradient attacks.

Random search over square patches set to +-eps: a proposal is kept when it lowers the
margin logit_y - max_{k != y} logit_k, and an example is broken once that margin is
negative. It uses only the model's outputs, so a model whose gradients are masked
(by a solver, quantisation or saturation) is attacked as well as any other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from odelab.attacks.base import Attack, clip_to_ball
from odelab.errors import ConfigError


@torch.no_grad()
def margin(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """logit of the true class minus the largest other logit (< 0: misclassified)."""
    logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -float("inf"))
    return true - others.max(dim=1).values


class Square(Attack):
    """L-inf Square attack with `queries` model evaluations per example.

    Args:
        eps: radius of the ball on the [0, 1] pixel scale.
        queries: proposals per example (each one forward pass of the unbroken examples).
        p_init: initial share of the image a square covers; halved on the schedule of
            the paper (rescaled to `queries`).
        seed: seeds the initial stripes, the squares and their signs.
    """

    kind = "square"

    def __init__(self, eps: float, queries: int = 1000, p_init: float = 0.05, seed: int = 0):
        super().__init__(eps)
        if queries < 1 or not 0 < p_init <= 1:
            raise ConfigError("attack.queries must be >= 1 and attack.p_init in (0, 1]")
        self.queries, self.p_init, self.seed = queries, p_init, seed

    def share(self, query: int) -> float:
        """The share of pixels a square covers at `query` (the paper's schedule for 10k)."""
        scaled = int(query / self.queries * 10_000)
        cuts = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        return self.p_init / 2 ** sum(scaled > c for c in cuts)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        eps, (n, c, h, w) = self.strength, x.shape
        gen = torch.Generator().manual_seed(self.seed)

        def signs(*shape: int) -> Tensor:
            return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(x)

        # Vertical stripes of +-eps: the paper's initialisation.
        best = clip_to_ball(x + eps * signs(n, c, 1, w), x, eps)
        best_margin = margin(model, best, y)
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        for query in range(self.queries):
            idx = (best_margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            side = max(1, min(h, round(math.sqrt(self.share(query) * h * w))))
            top = torch.randint(0, h - side + 1, (len(idx),), generator=gen).to(x.device)
            left = torch.randint(0, w - side + 1, (len(idx),), generator=gen).to(x.device)
            inside_r = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side)
            inside_c = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side)
            window = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]  # (k, 1, h, w)
            # One sign per example and channel over the whole square.
            patch = x[idx] + eps * signs(len(idx), c, 1, 1)
            proposal = clip_to_ball(torch.where(window, patch, best[idx]), x[idx], eps)
            new_margin = margin(model, proposal, y[idx])
            better = new_margin < best_margin[idx]
            best[idx[better]], best_margin[idx[better]] = proposal[better], new_margin[better]
        return best

"""True dynamical systems that dynamics-recovery experiments try to learn.

Each is a vector field `f(t, y)` on states of shape (..., 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CubicSpiral(nn.Module):
    """dy/dt = (y**3) A: the spiral of the torchdiffeq demo (Chen et al. 2018)."""

    def __init__(self, matrix: tuple[tuple[float, float], ...] = ((-0.1, 2.0), (-2.0, -0.1))):
        super().__init__()
        self.register_buffer("A", torch.tensor(matrix))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return (y**3) @ self.A


class DampedLinear(nn.Module):
    """dy/dt = y A: a linear damped oscillator."""

    def __init__(self, matrix: tuple[tuple[float, float], ...] = ((-0.1, 2.0), (-2.0, -0.1))):
        super().__init__()
        self.register_buffer("A", torch.tensor(matrix))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return y @ self.A


class LotkaVolterra(nn.Module):
    """Predator-prey: dx = a x - b x y, dy = d x y - g y."""

    def __init__(
        self, alpha: float = 1.5, beta: float = 1.0, delta: float = 1.0, gamma: float = 3.0
    ):
        super().__init__()
        self.alpha, self.beta, self.delta, self.gamma = alpha, beta, delta, gamma

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x, p = y[..., 0], y[..., 1]
        return torch.stack(
            (self.alpha * x - self.beta * x * p, self.delta * x * p - self.gamma * p), dim=-1
        )


class VanDerPol(nn.Module):
    """dx = y, dy = mu (1 - x^2) y - x: a limit cycle.

    `mu` is one stiffness, or a tensor of one per row of a batch of oscillators.
    """

    def __init__(self, mu: float | Tensor = 1.0):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.get_default_dtype()))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x, v = y[..., 0], y[..., 1]
        return torch.stack((v, self.mu * (1 - x**2) * v - x), dim=-1)


class Robertson(nn.Module):
    """Robertson's chemical kinetics, the stiff test of Kim et al. 2021 (their Sec. 4).

    dy1 = -k1 y1 + k3 y2 y3, dy2 = k1 y1 - k2 y2^2 - k3 y2 y3, dy3 = k2 y2^2. The rates span
    nine orders of magnitude (k1 = 0.04, k2 = 3e7, k3 = 1e4), and y1 + y2 + y3 is conserved.
    """

    def __init__(self, k1: float = 0.04, k2: float = 3e7, k3: float = 1e4):
        super().__init__()
        self.k1, self.k2, self.k3 = k1, k2, k3

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r1, r2, r3 = self.k1 * y1, self.k2 * y2**2, self.k3 * y2 * y3
        return torch.stack((-r1 + r3, r1 - r2 - r3, r2), dim=-1)


def time_scale(system: nn.Module) -> float:
    """How much longer than at its default parameters the system takes to do the same thing.

    Van der Pol's relaxation period grows as (3 - 2 ln 2) mu for large mu and is 6.663 at
    mu = 1; the factor keeps a span of `t_end` covering the same number of cycles at any mu.
    Other systems: 1.
    """
    if isinstance(system, VanDerPol) and system.mu.ndim == 0:
        return max(1.0, 1.6137 * float(system.mu) / 6.663)
    return 1.0

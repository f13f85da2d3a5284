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

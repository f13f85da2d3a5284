"""The implicit route (torchdiffeq scipy_solver, Radau) on a small stiff linear system."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.tasks.dynamics import DynamicsRecovery

RADAU = Solver(method="scipy_solver", rtol=1e-9, atol=1e-11, options={"solver": "Radau"})


class Diagonal(nn.Module):
    """dy/dt = a * y with learnable rates a (diag(-1, -1000): stiffness ratio 1000)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([-1.0, -1000.0], dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * y


def _loss(field: Diagonal, t: torch.Tensor) -> torch.Tensor:
    block = ODEBlock(field, RADAU, Sensitivity(method="adjoint"))
    return block(torch.ones(2, dtype=torch.float64), t).sum()


def test_radau_adjoint_gradient_matches_finite_differences_and_the_closed_form() -> None:
    field, t = Diagonal(), torch.tensor([0.0, 2e-3], dtype=torch.float64)
    loss = _loss(field, t)
    (grad,) = torch.autograd.grad(loss, field.a)
    fd = torch.zeros(2, dtype=torch.float64)
    h = 1e-3
    with torch.no_grad():
        for i in range(2):
            for sign in (1, -1):
                field.a[i] += sign * h
                fd[i] += sign * _loss(field, t) / (2 * h)
                field.a[i] -= sign * h
    closed = t[-1] * torch.exp(field.a.detach() * t[-1])  # d/da exp(a T) = T exp(a T)
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(grad, closed, rtol=1e-4, atol=1e-8)


def _optimizer(params):  # noqa: ANN001, ANN202
    return torch.optim.SGD(params, lr=0.1)


def test_scipy_route_refuses_direct_gradients() -> None:
    with pytest.raises(ConfigError, match="sensitivity=adjoint"):
        DynamicsRecovery(Diagonal(), RADAU, Sensitivity(method="direct"), optimizer=_optimizer)


def test_wall_budget_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="model.max_wall_s"):
        DynamicsRecovery(
            Diagonal(), RADAU, Sensitivity(method="adjoint"), optimizer=_optimizer, max_wall_s=0
        )


def test_adjoint_solve_keeps_the_forward_methods_options() -> None:
    radau = Solver(method="scipy_solver", rtol=1e-5, atol=1e-8, options={"solver": "Radau"})
    same = Sensitivity(method="adjoint").odeint_adjoint_kwargs(radau)
    assert same["adjoint_method"] == "scipy_solver"
    assert same["adjoint_options"]["solver"] == "Radau"
    other = Sensitivity(method="adjoint", adjoint_method="dopri5").odeint_adjoint_kwargs(radau)
    assert "solver" not in other["adjoint_options"]

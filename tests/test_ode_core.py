"""The ODE core against ground truth: analytic solutions, exact NFE, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from odelab.errors import ConfigError, SolverError
from odelab.ode import ODEBlock, Sensitivity, Solver, odesolve


class Linear(nn.Module):
    """dy/dt = a y, so y(t) = y0 exp(a t)."""

    def __init__(self, a: float = -0.7):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, y):
        return self.a * y


def final_error(solver: Solver) -> float:
    y0 = torch.tensor([1.0], dtype=torch.float64)
    with torch.no_grad():
        y = odesolve(Linear(), y0, torch.tensor([0.0, 1.0], dtype=torch.float64), solver)
    return abs(float(y[-1, 0]) - math.exp(-0.7))


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_solvers_converge_at_their_order(method: str, order: int) -> None:
    coarse = final_error(Solver(method=method, rtol=None, atol=None, step_size=0.1))
    fine = final_error(Solver(method=method, rtol=None, atol=None, step_size=0.05))
    observed = math.log2(coarse / fine)
    assert abs(observed - order) < 0.25, f"{method}: observed order {observed:.2f}"


@pytest.mark.parametrize("method", ["dopri5", "adaptive_heun"])
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_adaptive_solvers_meet_their_tolerance(method: str, tol: float) -> None:
    err = final_error(Solver(method=method, rtol=tol, atol=tol))
    assert err < 10 * tol


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
def test_adaptive_error_shrinks_with_tolerance(method: str) -> None:
    # torchdiffeq's bosh3 overshoots its tolerance (global error ~ 5e-6 at 1e-8),
    # so for it only the trend is checked; the others also pass the bound above.
    loose = final_error(Solver(method=method, rtol=1e-4, atol=1e-4))
    tight = final_error(Solver(method=method, rtol=1e-8, atol=1e-8))
    assert tight < loose / 100


@pytest.mark.parametrize("method,stages", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_nfe_is_steps_times_stages(method: str, stages: int) -> None:
    block = ODEBlock(Linear(), Solver(method=method, rtol=None, atol=None, step_size=0.125))
    y0 = torch.ones(3, 1, dtype=torch.float64)
    block(y0).sum().backward()
    assert block.nfe_forward == 8 * stages
    assert block.nfe_backward == 0  # direct: autograd replays the graph, no new evaluations


def test_adjoint_counts_backward_evaluations_separately() -> None:
    block = ODEBlock(
        Linear(), Solver(method="rk4", rtol=None, atol=None, step_size=0.25), Sensitivity("adjoint")
    )
    block(torch.ones(2, 1, dtype=torch.float64)).sum().backward()
    assert block.nfe_forward == 16
    # The adjoint solve runs the same grid backwards, one VJP per stage.
    assert block.nfe_backward == 16


def small_field() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, z):
            return self.net(z)

    return Field()


def gradients(sensitivity: Sensitivity) -> list[torch.Tensor]:
    field = small_field()
    solver = Solver(method="dopri5", rtol=1e-10, atol=1e-10)
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    out = ODEBlock(field, solver, sensitivity)(y0)
    (out**2).sum().backward()
    return [y0.grad] + [p.grad for p in field.parameters()]


def test_adjoint_and_direct_gradients_agree() -> None:
    direct = gradients(Sensitivity("direct"))
    adjoint = gradients(Sensitivity("adjoint", seminorm=True))
    for d, a in zip(direct, adjoint, strict=False):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["direct", "adjoint"])
def test_gradients_match_finite_differences(method: str) -> None:
    field = small_field()
    block = ODEBlock(field, Solver(method="dopri5", rtol=1e-10, atol=1e-10), Sensitivity(method))
    y0 = torch.tensor([[0.5, -0.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: block(y), (y0,), eps=1e-6, atol=1e-5)


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of .*dopri5"):
        Solver(method="foo")


def test_wrong_field_shape_names_the_key() -> None:
    class Bad(nn.Module):
        def forward(self, t, z):
            return z[..., :1]

    with pytest.raises(ConfigError, match="model.field returned shape"):
        ODEBlock(Bad())(torch.ones(4, 2))


def test_runaway_solve_stops_with_a_clear_error() -> None:
    class Blowup(nn.Module):
        def forward(self, t, z):
            return z**2  # finite-time blow-up at t = 1 for z0 = 1

    block = ODEBlock(
        Blowup(), Solver(method="dopri5", rtol=1e-6, atol=1e-6, max_num_steps=200), t=(0.0, 2.0)
    )
    with pytest.raises(SolverError, match="dopri5 \\(rtol=1e-06"):
        block(torch.ones(1))


def test_nfe_guard_stops_fixed_step_solves() -> None:
    solver = Solver(method="euler", rtol=None, atol=None, step_size=1e-3, max_nfe=100)
    with pytest.raises(SolverError, match="solver.max_nfe=100"):
        ODEBlock(Linear(), solver)(torch.ones(1, dtype=torch.float64))


def test_deadline_stops_a_solve_midway_and_can_be_lifted() -> None:
    import time

    block = ODEBlock(Linear(), Solver(method="euler", rtol=None, atol=None, step_size=0.1))
    y0 = torch.ones(1, dtype=torch.float64)
    block.set_deadline(time.perf_counter() - 1.0)  # already passed: the first evaluation stops
    with pytest.raises(SolverError, match="wall-time deadline"):
        block(y0)
    block.set_deadline(None)
    # Euler on dy/dt = -0.7 y (Linear) over [0, 1] at h = 0.1 is (1 - 0.07)^10 exactly.
    assert block(y0).item() == pytest.approx(0.93**10)


def test_non_finite_output_is_reported() -> None:
    class NaNField(nn.Module):
        def forward(self, t, z):
            return z * float("nan")

    block = ODEBlock(NaNField(), Solver(method="rk4", rtol=None, atol=None, step_size=0.5))
    with pytest.raises(SolverError, match="NaN or inf"):
        block(torch.ones(1))

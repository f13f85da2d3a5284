"""The FFJORD toy recipe and the fast recipe: learned end time, configs, samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import Tensor, nn

from odelab.data.toy2d import SAMPLERS, TRUE_LOG_DENSITIES, sample
from odelab.models.cnf import CNF, MIN_T_END, TraceEstimator
from odelab.models.time_fields import ConcatSquashField
from odelab.ode import Solver
from odelab.train import run

TIGHT = Solver(method="dopri5", rtol=1e-10, atol=1e-10, max_num_steps=100_000)
RK4 = Solver(method="rk4", rtol=None, atol=None, step_size=0.05)


class LinearField(nn.Module):
    """dz/dt = A z, whose log-density after time T is known in closed form."""

    def __init__(self, a: Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.a.T


A = torch.tensor([[-0.3, 0.8], [-0.5, 0.4]], dtype=torch.float64)
X = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def mean_log_prob(flow: CNF) -> Tensor:
    return flow.log_prob(X).log_prob.mean()


def closed_form_mean_log_prob(t_end: float) -> float:
    # z = expm(A T) x ~ N(0, I): log p(x) = log N(z) + T tr(A).
    z = X @ torch.linalg.matrix_exp(A * t_end).T
    log_normal = -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi)
    return float((log_normal + t_end * torch.trace(A)).mean())


@pytest.mark.parametrize("solver", [RK4, TIGHT], ids=["rk4", "dopri5"])
def test_learned_end_time_gradient_matches_finite_differences(solver: Solver) -> None:
    flow = CNF(
        LinearField(A.clone()), solver, trace=TraceEstimator("exact"), t_end=0.5, learn_t_end=True
    ).double()
    assert abs(float(flow.t_end.detach()) - 0.5) < 1e-6
    assert flow.raw_t_end.requires_grad
    (grad,) = torch.autograd.grad(mean_log_prob(flow), flow.raw_t_end)
    eps = 1e-5
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            shifted = CNF(LinearField(A.clone()), solver, t_end=0.5, learn_t_end=True).double()
            shifted.raw_t_end += sign * eps
            values.append(float(mean_log_prob(shifted)))
    finite_difference = (values[0] - values[1]) / (2 * eps)
    assert float(grad) == pytest.approx(finite_difference, rel=1e-5, abs=1e-7)
    # And against the closed form: d/draw = d/dT * sigmoid(raw) (softplus' derivative).
    dt = 1e-6
    d_closed = (closed_form_mean_log_prob(0.5 + dt) - closed_form_mean_log_prob(0.5 - dt)) / (
        2 * dt
    )
    sigmoid = float(torch.sigmoid(flow.raw_t_end.detach()))
    assert float(grad) == pytest.approx(d_closed * sigmoid, rel=1e-3)


def test_learned_end_time_stays_positive_under_large_steps() -> None:
    flow = CNF(LinearField(A.clone()), RK4, t_end=0.5, learn_t_end=True).double()
    optimizer = torch.optim.SGD([flow.raw_t_end], lr=1e4)
    for _ in range(3):
        # A loss that pushes the end time down hard.
        optimizer.zero_grad()
        flow.t_end.backward()
        optimizer.step()
        assert float(flow.t_end.detach()) >= MIN_T_END > 0
    assert float(flow.raw_t_end.detach()) < -1e3  # softplus alone has underflowed to 0
    assert torch.isfinite(flow.log_prob(X).log_prob).all()


def test_fixed_end_time_is_not_a_parameter() -> None:
    flow = CNF(LinearField(A.clone()), RK4, t_end=0.7)
    assert "raw_t_end" not in dict(flow.named_parameters())
    assert float(flow.t_end) == pytest.approx(0.7)


def test_concat_squash_field_depends_on_time_and_keeps_the_shape() -> None:
    torch.manual_seed(0)
    field = ConcatSquashField(dim=2, hidden=16, depth=3)
    z = torch.randn(5, 2)
    a, b = field(torch.tensor(0.0), z), field(torch.tensor(0.7), z)
    assert a.shape == (5, 2)
    assert not torch.allclose(a, b)
    assert sum(p.numel() for p in ConcatSquashField(2, 64, 3).parameters()) == (
        # three hidden layers and the output, each W h + b, a gate (w, b) and a shift (w)
        (2 * 64 + 64 + 3 * 64) + 2 * (64 * 64 + 64 + 3 * 64) + (64 * 2 + 2 + 3 * 2)
    )


# A smoke run checks the plumbing: small evaluation sets and grid, no figures.
SMALL = (
    "trainer.fast_dev_run=true",
    "data.n_val=64",
    "data.n_test=64",
    "data.eval_batch_size=64",
    "callbacks=none",
)


def test_ffjord_config_is_the_papers_recipe_and_runs(make_cfg) -> None:
    cfg = make_cfg("experiment=cnf_ffjord", *SMALL)
    assert cfg.model.flow.field._target_.endswith("ConcatSquashField")
    assert (cfg.model.flow.field.hidden, cfg.model.flow.field.depth) == (64, 3)
    assert cfg.model.flow.field.activation == "tanh"
    assert cfg.model.flow.learn_t_end and cfg.model.flow.t_end == 0.5
    assert (cfg.solver.method, cfg.solver.rtol, cfg.solver.atol) == ("dopri5", 1e-5, 1e-5)
    assert cfg.trace.estimator == "exact"
    assert cfg.data.batch_size == 100
    assert cfg.trainer.max_epochs * cfg.data.batches_per_epoch == 10_000
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay) == (1e-3, 1e-5)
    metrics = run(cfg)
    assert math.isfinite(metrics["test/nll"])


def test_fast_config_trains_on_rk4_and_evaluates_at_dopri5(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("experiment=cnf_fast", *SMALL, "callbacks=default", "~callbacks.save_figures")
    task = instantiate(cfg.model)
    assert task.flow.block.solver.method == "rk4"
    eval_solver = task.flow.eval_block.solver
    assert (eval_solver.method, eval_solver.rtol, eval_solver.atol) == ("dopri5", 1e-5, 1e-5)
    assert task.active_regularizers == ("kinetic", "jacobian")
    metrics = run(cfg)
    # The test solve is adaptive (more evaluations than rk4's 4 steps x 4 stages would use).
    assert metrics["test/nfe_forward"] != 16
    assert math.isfinite(metrics["test/nll"])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_is_seeded(name: str) -> None:
    first, again, other = (
        sample(name, 500, seed=11),
        sample(name, 500, seed=11),
        sample(name, 500, seed=12),
    )
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Batches drawn with one generator in sequence are not all the same batch.
    gen = torch.Generator().manual_seed(11)
    assert not torch.equal(SAMPLERS[name](500, gen), SAMPLERS[name](500, gen))


@pytest.mark.parametrize("name", sorted(TRUE_LOG_DENSITIES))
def test_closed_form_density_integrates_to_one_by_quadrature(name: str) -> None:
    # Simpson's rule on a fine grid (the checkerboard's jumps sit on grid lines, so each
    # cell is integrated exactly); the mass outside [-6, 6]^2 is negligible for all four.
    axis = np.linspace(-6.0, 6.0, 961)
    xs, ys = np.meshgrid(axis, axis, indexing="xy")
    points = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=1))
    density = TRUE_LOG_DENSITIES[name](points).exp().numpy().reshape(xs.shape)
    mass = integrate.simpson(integrate.simpson(density, x=axis, axis=1), x=axis)
    assert mass == pytest.approx(1.0, abs=2e-3)

"""Continuous normalizing flows against closed forms and independent estimates."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from odelab.errors import SolverError
from odelab.models.cnf import (
    CNF,
    TraceEstimator,
    exact_trace,
    hutchinson_trace,
    rademacher_noise,
    standard_normal_log_prob,
    vector_jacobian,
)
from odelab.models.planar import PlanarFlow
from odelab.models.time_fields import ConcatMLPField, HyperField
from odelab.ode import Sensitivity, Solver
from odelab.train import run

TIGHT = Solver(method="dopri5", rtol=1e-10, atol=1e-10, max_num_steps=100_000)


class LinearField(nn.Module):
    """dz/dt = A z: z(t) = expm(A t) z(0), so the density stays Gaussian."""

    def __init__(self, a: Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.a.T


def gaussian_log_prob(x: Tensor, cov: Tensor) -> Tensor:
    dist = torch.distributions.MultivariateNormal(
        torch.zeros(x.shape[1], dtype=x.dtype), covariance_matrix=cov
    )
    return dist.log_prob(x)


def test_linear_field_matches_closed_form_density() -> None:
    # Data x at t = 0 maps to z = M x at t = 1 with M = expm(A), and z ~ N(0, I),
    # so x ~ N(0, (M^T M)^-1): a log-density computed without any trace.
    a = torch.tensor([[-0.3, 0.8], [-0.5, 0.4]], dtype=torch.float64)
    flow = CNF(LinearField(a), TIGHT, trace=TraceEstimator("exact"))
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = flow.log_prob(x).log_prob
    m = torch.linalg.matrix_exp(a)
    want = gaussian_log_prob(x, torch.linalg.inv(m.T @ m))
    assert (got - want).abs().max() < 1e-4


def test_linear_field_closed_form_in_three_dimensions_with_log_det() -> None:
    # Independent of the Gaussian: log p(x) = log N(expm(A) x) + tr(A).
    a = torch.tensor([[0.2, -0.4, 0.1], [0.3, -0.6, 0.5], [0.0, 0.7, 0.1]], dtype=torch.float64)
    flow = CNF(LinearField(a), TIGHT)
    x = torch.randn(16, 3, dtype=torch.float64)
    with torch.no_grad():
        got = flow.log_prob(x).log_prob
    want = standard_normal_log_prob(x @ torch.linalg.matrix_exp(a).T) + torch.trace(a)
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise: str) -> None:
    torch.manual_seed(0)
    field = ConcatMLPField(dim=5, hidden=16, depth=2).double()
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    f = field(torch.tensor(0.3, dtype=torch.float64), z)
    exact = exact_trace(f, z, create_graph=False)
    probes = 4000
    draw = rademacher_noise if noise == "rademacher" else torch.randn_like
    estimates = torch.stack(
        [
            hutchinson_trace(vector_jacobian(f, z, v, create_graph=False), v)
            for v in (draw(z) for _ in range(probes))
        ]
    )
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(probes)
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean, exact, stderr)
    assert (stderr > 0).all()


def test_exact_trace_matches_jacobian() -> None:
    field = HyperField(dim=3, units=8)
    z = torch.randn(4, 3, requires_grad=True)
    f = field(torch.tensor(0.5), z)
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda v: field(torch.tensor(0.5), v[None])[0], zi)
            for zi in z.detach()
        ]
    )
    assert torch.allclose(
        exact_trace(f, z, create_graph=False), jac.diagonal(dim1=1, dim2=2).sum(1), atol=1e-5
    )


def test_jacobian_regularizer_exact_and_hutchinson_against_closed_form() -> None:
    # dz/dt = A z: df/dz = A everywhere, so the integrated squared Frobenius norm over
    # [0, t_end] is |A|_F^2 t_end for every sample. The exact trace gives it exactly;
    # the Hutchinson probe (|v^T A|^2 with Rademacher v) is unbiased for it.
    torch.manual_seed(0)
    a = torch.tensor([[0.3, -1.2], [0.7, 0.1]], dtype=torch.float64)
    truth = a.pow(2).sum().item() * 0.8
    x = torch.randn(4000, 2, dtype=torch.float64)
    exact = CNF(LinearField(a), solver=TIGHT, trace=TraceEstimator("exact"), t_end=0.8)
    out = exact.log_prob(x, regularizers=("jacobian",))
    assert torch.allclose(out.regularizers["jacobian"], torch.full_like(x[:, 0], truth))
    probe = CNF(LinearField(a), solver=TIGHT, trace=TraceEstimator("hutchinson"), t_end=0.8)
    values = probe.log_prob(x, regularizers=("jacobian",)).regularizers["jacobian"]
    stderr = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - truth) < 4 * stderr
    assert values.std().item() > 0.1  # the probe is noisy; the exact path is not


@pytest.mark.parametrize(
    "field", [ConcatMLPField(2, 16, 2), HyperField(2, 8)], ids=["concat", "hyper"]
)
def test_round_trip_returns_the_input(field: nn.Module) -> None:
    torch.manual_seed(0)
    for p in field.parameters():
        p.data.mul_(3.0)  # a field that moves points noticeably
    field = field.double()
    tol = 1e-8
    flow = CNF(field, Solver(method="dopri5", rtol=tol, atol=tol))
    x = torch.randn(50, 2, dtype=torch.float64)
    with torch.no_grad():
        z = flow.to_base(x)
        back = flow.sample(z)
    assert (z - x).abs().max() > 0.05, "the field should move the points"
    assert (back - x).abs().max() < 1e-5


def test_planar_inverse_and_log_det() -> None:
    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, layers=6, init_std=1.0).double()
    x = torch.randn(40, 2, dtype=torch.float64)
    with torch.no_grad():
        out = flow.log_prob(x)
        back = flow.sample(out.base)
    assert (back - x).abs().max() < 1e-8
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: flow.to_base(v[None])[0], xi) for xi in x]
    )
    want = standard_normal_log_prob(out.base) + torch.linalg.slogdet(jac)[1]
    assert torch.allclose(out.log_prob, want, atol=1e-8)


class PoisonableField(nn.Module):
    """A field that starts returning NaN once `poisoned` is set."""

    def __init__(self, dim: int = 2, hidden: int = 8):
        super().__init__()
        self.inner = ConcatMLPField(dim, hidden, 1)
        self.poisoned = False

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        out = self.inner(t, z)
        return out * math.nan if self.poisoned else out


class PoisonAtSecondEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        module.flow.dynamics.field.poisoned = trainer.current_epoch >= 1


def test_nan_field_stops_with_clear_error_and_keeps_last_checkpoint(
    make_cfg, tmp_path: Path
) -> None:
    cfg = make_cfg(
        "experiment=cnf_toy",
        "solver=rk4",
        "solver.step_size=0.5",
        f"model.flow.field._target_={__name__}.PoisonableField",
        "~model.flow.field.depth",
        "~model.flow.field.activation",
        "model.flow.field.hidden=8",
        "+callbacks.poison._target_=" + f"{__name__}.PoisonAtSecondEpoch",
        "data.batch_size=32",
        "data.batches_per_epoch=2",
        "data.n_val=64",
        "data.n_test=64",
        "trainer.max_epochs=3",
    )
    with pytest.raises(SolverError, match="NaN"):
        run(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "epoch_000.ckpt"
    assert checkpoint.is_file()
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("seminorm", [False, True], ids=["adjoint", "adjoint-seminorm"])
def test_adjoint_gradients_match_direct(seminorm: bool) -> None:
    torch.manual_seed(0)
    field = ConcatMLPField(2, 8, 1).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    solver = Solver(method="dopri5", rtol=1e-9, atol=1e-9)
    grads = []
    for sensitivity in (Sensitivity("direct"), Sensitivity("adjoint", seminorm=seminorm)):
        flow = CNF(field, solver, sensitivity)
        out = flow.log_prob(x, regularizers=("kinetic",))
        loss = -out.log_prob.mean() + out.regularizers["kinetic"].mean()
        grads.append(torch.autograd.grad(loss, list(field.parameters())))
    for direct, adjoint in zip(*grads, strict=False):
        assert torch.allclose(direct, adjoint, atol=1e-6, rtol=1e-5)

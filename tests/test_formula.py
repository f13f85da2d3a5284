"""Issue 43: closed forms and the discrete log-det (6) against independent truths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from odelab.errors import ConfigError
from odelab.models.cnf import CNF, TraceEstimator, standard_normal_log_prob
from odelab.models.residual_flow import (
    LinearField,
    ResidualFlow,
    TanhField,
    linear_field_flow,
    linear_field_log_det,
    tanh_field_flow,
    tanh_field_log_det,
)
from odelab.ode import Solver


def test_tanh_field_flow_solves_the_ode() -> None:
    # Finite difference in t of the closed-form flow equals a * tanh(z(t)).
    torch.manual_seed(0)
    z0 = torch.randn(5, 3, dtype=torch.float64)
    a = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    t, eps = 0.8, 1e-6
    dz = (tanh_field_flow(z0, a, t + eps) - tanh_field_flow(z0, a, t - eps)) / (2 * eps)
    torch.testing.assert_close(dz, a * torch.tanh(tanh_field_flow(z0, a, t)), atol=1e-8, rtol=0)


def test_tanh_field_log_det_matches_autograd_jacobian() -> None:
    torch.manual_seed(1)
    a = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    for z0 in torch.randn(4, 3, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda z: tanh_field_flow(z, a, 1.1), z0)
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(tanh_field_log_det(z0, a, 1.1), expected)


def test_residual_flow_log_det_matches_full_jacobian() -> None:
    torch.manual_seed(2)
    # eval(): spectral_norm's power iteration updates the weights on every training-mode call.
    flow = ResidualFlow(dim=3, steps=3, h=0.5, width=16).double().eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac).logabsdet)


def test_euler_trace_agrees_with_discrete_log_det_to_second_order() -> None:
    # One Euler step of (7) adds h tr(J); (6) adds log det(I + h J) = h tr(J) + O(h^2),
    # so the gap must shrink about fourfold when h halves.
    torch.manual_seed(3)
    flow = ResidualFlow(dim=4, steps=1, h=0.5, width=16).double().eval()
    x = torch.randn(8, 4, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(flow.field(0)))(x)
    trace = jac.diagonal(dim1=1, dim2=2).sum(dim=1)
    eye = torch.eye(4, dtype=torch.float64)
    gaps = []
    for h in (0.2, 0.1, 0.05):
        gaps.append((torch.linalg.slogdet(eye + h * jac).logabsdet - h * trace).abs().max().item())
    for coarse, fine in zip(gaps[:-1], gaps[1:], strict=True):
        assert 3.5 < coarse / fine < 4.5


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_finite_step_error_of_trace_formula_falls_at_the_solver_order(
    method: str, order: int
) -> None:
    # Formula (7) integrated on the fixed grid: the log-density error against the closed
    # form must shrink by about 2^order when the step halves (asymptotic range).
    a = torch.tensor([0.9, -0.6], dtype=torch.float64)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = standard_normal_log_prob(tanh_field_flow(x, a, 1.0)) + tanh_field_log_det(x, a, 1.0)
    errors = []
    for n in (16, 32):
        solver = Solver(method=method, step_size=1.0 / n, rtol=None, atol=None)
        flow = CNF(TanhField(a), solver, trace=TraceEstimator("exact"))
        with torch.no_grad():
            errors.append((flow.log_prob(x).log_prob - want).abs().max().item())
    rate = errors[0] / errors[1]
    assert 2**order * 0.8 < rate < 2**order * 1.25


def test_linear_field_closed_form_matches_autograd_and_the_ode() -> None:
    # exp(A t) z0 solves dz/dt = A z (finite difference in t), and its log|det| from the
    # autograd Jacobian equals t tr(A) (Jacobi's formula).
    A = torch.tensor([[-0.5, 1.2], [-0.8, 0.3]], dtype=torch.float64)
    z0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t, eps = 0.7, 1e-6
    dz = (linear_field_flow(z0, A, t + eps) - linear_field_flow(z0, A, t - eps)) / (2 * eps)
    field = LinearField(A)
    torch.testing.assert_close(dz, field(None, linear_field_flow(z0, A, t)), atol=1e-8, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda z: linear_field_flow(z[None], A, t)[0], z0[0])
    torch.testing.assert_close(
        linear_field_log_det(z0, A, t)[0], torch.linalg.slogdet(jac).logabsdet
    )


def test_residual_flow_trains_samples_and_refuses_non_invertible_steps() -> None:
    # Training mode (spectral-norm power iteration on): the log-prob has gradients, and
    # sampling inverts the steps (fixed point) back to the data.
    torch.manual_seed(6)
    flow = ResidualFlow(dim=2, steps=4, h=0.25, width=16, depth=3, coeff=3.6)
    x = torch.randn(8, 2)
    loss = -flow.log_prob(x).log_prob.mean()
    loss.backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)
    flow.eval()
    torch.testing.assert_close(flow.sample(flow.to_base(x)), x, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="h \\* model.flow.coeff"):
        ResidualFlow(dim=2, steps=4, h=0.25, coeff=4.0)


# --- the report (issue 43): data checks on the committed quick records --------------------

REPORTS = Path(__file__).resolve().parents[1] / "experiments" / "reports"


def test_quick_report_rerenders_byte_for_byte(tmp_path: Path) -> None:
    # Render from the committed records alone: the markdown and claims.json must match.
    from odelab.reports import REPRODUCTIONS
    from odelab.reproduce import render

    out = tmp_path / "formula_quick"
    text = render(REPRODUCTIONS["formula"], "quick", REPORTS / "formula_quick" / "records", out)
    assert text == (REPORTS / "formula_quick.md").read_text()
    committed = (REPORTS / "formula_quick" / "claims.json").read_text()
    assert (out / "claims.json").read_text() == committed
    summary = text.splitlines()[: text.splitlines().index("## Training comparison")]
    assert len(summary) <= 25


def test_crossover_interpolates_in_log_dimension() -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "formula_cost", REPORTS.parent / "formula_cost.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    # Ratio 0.5 at D=4 and 2 at D=16: 1 is halfway in log ratio, so halfway in log D: D = 8.
    assert module.crossover([2, 4, 16], [0.25, 0.5, 2.0]) == pytest.approx(8.0)
    assert module.crossover([2, 4], [1.5, 3.0]) == 2.0
    assert module.crossover([2, 4], [0.1, 0.2]) is None


def test_quick_order_verdicts_recomputed_from_the_convergence_record() -> None:
    # The fitted orders in claims.json are the record's per-field orders (mean over fields).
    import json

    record = json.loads(
        (REPORTS / "formula_quick" / "records" / "bench" / "convergence.json").read_text()
    )
    verdicts = json.loads((REPORTS / "formula_quick" / "claims.json").read_text())
    by_id = {v["claim"]: v for v in verdicts}
    for method in ("euler", "midpoint", "rk4"):
        orders = [per[method] for per in record["fitted_order"].values()]
        assert by_id[f"order_{method}"]["mean"] == pytest.approx(sum(orders) / len(orders), 1e-5)


def test_discrete_log_det_of_a_linear_field_has_its_closed_form() -> None:
    # For f(z) = A z the residual map is z <- (I + hA) z, so after N steps
    # log p(x) = log N((I + hA)^N x) + N log|det(I + hA)|, exactly.
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "formula_convergence", REPORTS.parent / "formula_convergence.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    A = torch.tensor([[-0.5, 1.2], [-0.8, 0.3]], dtype=torch.float64)
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    steps, h = 8, 1.0 / 8
    step = torch.eye(2, dtype=torch.float64) + h * A
    z = x @ torch.linalg.matrix_power(step, steps).T
    want = standard_normal_log_prob(z) + steps * torch.linalg.slogdet(step).logabsdet
    torch.testing.assert_close(module.residual_log_prob(LinearField(A), x, steps), want)
    # (6) and Euler-(7) share their states; they differ by sum(log det(I + hJ) - h tr J) = O(h).
    gap = {
        n: module.discrete_points("linear", LinearField(A), n, x, want)[1].error for n in (8, 64)
    }
    assert gap[64] == pytest.approx(gap[8] / 8, rel=0.2)

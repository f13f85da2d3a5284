"""Fast paths of the ODE core agree with eager torchdiffeq: torchode's per-sample step
control, the sync-free fixed-grid loop (captured on CUDA), compiled fields; and a solve
reads device values on the host only where it must."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from torch import Tensor, nn

from bench.host_reads import count_host_reads
from odelab.errors import ConfigError, SolverError
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.ode.fast import FixedGridSolve, fixed_grid, torchode_solve
from odelab.systems import VanDerPol
from odelab.train import run


class MLPField(nn.Module):
    """Non-autonomous MLP field; time enters by broadcasting, as per-sample times require."""

    def __init__(self, dim: int = 3, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y) * (1.0 + 0.5 * torch.sin(t))


class PairField(nn.Module):
    """A tuple state (z, a): dz = f(z), da = -|z|^2, as a CNF carries (z, log p)."""

    def __init__(self) -> None:
        super().__init__()
        self.f = MLPField(2)

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z, _ = state
        return self.f(t, z), -(z**2).sum(dim=1, keepdim=True)


def _pair(
    solver_a: Solver,
    solver_b: Solver,
    field: nn.Module,
    sensitivity: str = "direct",
    t: tuple[float, ...] = (0.0, 0.5, 1.0),
) -> tuple[ODEBlock, ODEBlock]:
    """Two blocks over copies of one field (same weights), one per solver."""
    a = ODEBlock(field, solver_a, Sensitivity(sensitivity), t=t, return_trajectory=True)
    b = ODEBlock(
        copy.deepcopy(field), solver_b, Sensitivity(sensitivity), t=t, return_trajectory=True
    )
    return a, b


def _grads(block: ODEBlock, out: Tensor) -> list[Tensor]:
    weights = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    return list(torch.autograd.grad((out * weights).sum(), list(block.parameters())))


# ---------------------------------------------------------------------------
# torchode


def test_torchode_matches_torchdiffeq_forward_and_gradients() -> None:
    torch.manual_seed(0)
    tight = {"rtol": 1e-7, "atol": 1e-7}
    field = MLPField().double()
    a, b = _pair(Solver("dopri5", **tight), Solver("dopri5", backend="torchode", **tight), field)
    y0 = torch.randn(16, 3, dtype=torch.float64)
    ya, yb = a(y0), b(y0)
    assert ya.shape == yb.shape == (3, 16, 3)
    assert torch.allclose(ya, yb, atol=1e-6), (ya - yb).abs().max()
    for ga, gb in zip(_grads(a, ya), _grads(b, yb), strict=True):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4), (ga - gb).abs().max()
    # Every batched evaluation is counted, on the host.
    assert b.nfe_forward > 0 and b.nfe_forward == b.func.count.forward


def test_torchode_steps_each_sample_on_its_own() -> None:
    mu = torch.tensor([0.1, 1.0, 5.0, 10.0])
    y0 = torch.tensor([[2.0, 0.0]]).repeat(4, 1)
    block = ODEBlock(
        VanDerPol(mu), Solver("dopri5", rtol=1e-5, atol=1e-5, backend="torchode"), t=(0.0, 5.0)
    )
    joint = ODEBlock(VanDerPol(mu), Solver("dopri5", rtol=1e-5, atol=1e-5), t=(0.0, 5.0))
    out = block(y0)
    assert torch.allclose(out, joint(y0), atol=1e-3)
    steps = block.last_stats.n_steps.tolist()
    # The stiffest oscillator needs the most steps, the mildest the fewest.
    assert steps[0] < steps[-1] and steps == sorted(steps), steps


def test_torchode_tuple_state_matches() -> None:
    torch.manual_seed(1)
    field = PairField()
    a, b = _pair(
        Solver("dopri5", rtol=1e-6, atol=1e-6),
        Solver("dopri5", rtol=1e-6, atol=1e-6, backend="torchode"),
        field,
    )
    y0 = (torch.randn(8, 2), torch.zeros(8, 1))
    za, la = a(y0)
    zb, lb = b(y0)
    assert torch.allclose(za, zb, atol=1e-4) and torch.allclose(la, lb, atol=1e-4)


def test_torchode_per_sample_grids_match_separate_solves() -> None:
    """Times of shape (batch, T): each sample is read at its own times, from a shared start."""
    torch.manual_seed(7)
    field = MLPField().double()
    y0 = torch.randn(3, 3, dtype=torch.float64)
    grids = torch.tensor([[0.2, 0.5, 1.0], [0.1, 0.7, 0.9], [0.3, 0.4, 1.5]], dtype=torch.float64)
    count = ODEBlock(field, Solver("dopri5", backend="torchode")).func
    with count.forward_pass(Solver("dopri5", backend="torchode")):
        out, stats = torchode_solve(
            count,
            y0,
            grids,
            "dopri5",
            1e-8,
            1e-8,
            None,
            10_000,
            "dopri5",
            "field",
            t_start=torch.zeros(1, dtype=torch.float64),
        )
    assert out.shape == (3, 3, 3) and stats.n_steps.shape == (3,)
    for i in range(3):
        times = torch.cat([torch.zeros(1, dtype=torch.float64), grids[i]])
        alone = ODEBlock(
            field, Solver("dopri5", rtol=1e-8, atol=1e-8), t=times, return_trajectory=True
        )(y0[i : i + 1])
        assert torch.allclose(out[:, i], alone[1:, 0], atol=1e-6), out[:, i] - alone[1:, 0]


def test_torchode_failure_is_a_solver_error() -> None:
    y0 = torch.tensor([[2.0, 0.0]])
    block = ODEBlock(
        VanDerPol(torch.tensor([1000.0])),
        Solver("dopri5", rtol=1e-8, atol=1e-8, max_num_steps=20, backend="torchode"),
        t=(0.0, 10.0),
    )
    with pytest.raises(SolverError, match="REACHED_MAX_STEPS"):
        block(y0)


def test_torchode_evaluation_guard_is_a_solver_error() -> None:
    """The runaway guard counts torchode's batched evaluations like torchdiffeq's (the
    field sees one time per sample)."""
    block = ODEBlock(
        VanDerPol(torch.tensor([1.0, 5.0])),
        Solver("dopri5", rtol=1e-8, atol=1e-8, max_nfe=50, backend="torchode"),
        t=(0.0, 10.0),
    )
    with pytest.raises(SolverError, match="solver.max_nfe=50"):
        block(torch.tensor([[2.0, 0.0], [2.0, 0.0]]))


def test_torchode_settings_that_cannot_apply_name_their_key() -> None:
    with pytest.raises(ConfigError, match="sensitivity.method=adjoint"):
        ODEBlock(MLPField(), Solver("dopri5", backend="torchode"), Sensitivity("adjoint"))
    with pytest.raises(ConfigError, match="solver.method='rk4'"):
        Solver("rk4", rtol=None, atol=None, backend="torchode")
    with pytest.raises(ConfigError, match="solver.backend='jax'"):
        Solver("dopri5", backend="jax")


def test_torchode_backend_trains_through_the_config(make_cfg) -> None:
    cfg = make_cfg("experiment=spiral", "solver.backend=torchode", "trainer.fast_dev_run=true")
    metrics = run(cfg)
    assert metrics["train/nfe_forward"] > 0
    assert not any(math.isnan(v) for v in metrics.values())


# ---------------------------------------------------------------------------
# The sync-free fixed-grid loop (what CUDA captures)


def test_fixed_grid_is_torchdiffeqs() -> None:
    # ceil(1 / 0.3 + 1) = 5 points, the last moved onto the end time.
    assert fixed_grid([0.0, 1.0], 0.3) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    assert fixed_grid([0.0, 0.5, 1.0], None) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize(
    ("times", "step"),
    [((0.0, 1.0), 0.1), ((0.0, 0.35, 1.0), 0.1), ((0.0, 0.5, 1.0), None), ((1.0, 0.3, 0.0), 0.2)],
)
def test_capture_loop_matches_torchdiffeq(
    method: str, times: tuple[float, ...], step: float | None
) -> None:
    torch.manual_seed(2)
    fixed = {"rtol": None, "atol": None, "step_size": step}
    a, b = _pair(
        Solver(method, **fixed), Solver(method, capture=True, **fixed), MLPField(), t=times
    )
    y0 = torch.randn(8, 3)
    ya, yb = a(y0), b(y0)
    assert torch.allclose(ya, yb, atol=1e-5), (ya - yb).abs().max()
    for ga, gb in zip(_grads(a, ya), _grads(b, yb), strict=True):
        assert torch.allclose(ga, gb, atol=1e-5), (ga - gb).abs().max()
    assert a.nfe_forward == b.nfe_forward


def test_capture_falls_back_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    block = ODEBlock(MLPField(), Solver("dopri5", capture=True))
    with caplog.at_level(logging.WARNING, logger="odelab.ode.fast"):
        block(torch.randn(4, 3))
        block(torch.randn(4, 3))
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 1 and "not a fixed-grid method" in reasons[0], reasons


def test_host_reads_per_solve() -> None:
    """torchdiffeq's fixed-grid loop reads the time grid on the host every step (a device
    sync on CUDA); the capture loop reads nothing per step, and the block itself reads
    one value per solve (its NaN/inf check), however many evaluations it counts."""
    torch.manual_seed(3)
    fixed = {"rtol": None, "atol": None, "step_size": 0.05}  # 20 steps
    eager, loop = _pair(
        Solver("rk4", **fixed), Solver("rk4", capture=True, **fixed), MLPField(), t=(0.0, 1.0)
    )
    y0 = torch.randn(4, 3)
    eager(y0), loop(y0)  # first solves check the field and build the grid
    with count_host_reads() as eager_reads:
        eager(y0)
    with count_host_reads() as loop_reads:
        loop(y0)
    assert eager_reads.by_library.get("torchdiffeq", 0) >= 20, eager_reads
    assert loop_reads.total == 1 and loop_reads.by_library == {"odelab": 1}, loop_reads
    adaptive = ODEBlock(MLPField(), Solver("dopri5"))
    adaptive(y0)
    with count_host_reads() as reads:
        adaptive(y0)
    assert reads.by_library.get("odelab", 0) == 1, reads


def test_fixed_grid_solve_counts_its_evaluations() -> None:
    solve = FixedGridSolve(MLPField(), "rk4", [0.0, 1.0], 0.25)
    assert solve.nfe == 16


# ---------------------------------------------------------------------------
# Compiled fields


@pytest.mark.slow  # torch.compile of even a small field takes 1-2 minutes on the 2-core CPU
def test_compiled_field_matches_eager() -> None:
    torch.manual_seed(4)
    a, b = _pair(Solver("dopri5"), Solver("dopri5", compile_field=True), MLPField())
    y0 = torch.randn(8, 3)
    ya, yb = a(y0), b(y0)
    assert torch.allclose(ya, yb, atol=1e-5)
    for ga, gb in zip(_grads(a, ya), _grads(b, yb), strict=True):
        assert torch.allclose(ga, gb, atol=1e-5)
    assert set(a.state_dict()) == set(b.state_dict())  # checkpoints load either way


# ---------------------------------------------------------------------------
# CUDA graph capture (pytest -m gpu)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_solve_matches_eager_on_cuda(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(5)
    fixed = {"rtol": None, "atol": None, "step_size": 0.1}
    a, b = _pair(Solver(method, **fixed), Solver(method, capture=True, **fixed), MLPField())
    a, b = a.cuda(), b.cuda()
    for _ in range(3):  # capture on the first call, replay on the others
        y0 = torch.randn(8, 3, device="cuda", requires_grad=True)
        a.reset_nfe(), b.reset_nfe()
        with caplog.at_level(logging.WARNING, logger="odelab.ode.fast"):
            ya, yb = a(y0), b(y0)
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        assert torch.allclose(ya, yb, atol=1e-5)
        for ga, gb in zip(_grads(a, ya), _grads(b, yb), strict=True):
            assert torch.allclose(ga, gb, atol=1e-5)
        assert a.nfe_forward == b.nfe_forward
    assert b.fast_state["graphs"], "no graph was captured"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rknet_trains_captured_on_cuda(make_cfg) -> None:
    cfg = make_cfg(
        "experiment=mnist_rknet",
        "trainer=gpu",
        "trainer.fast_dev_run=true",
        "solver.capture=true",
        "data.batch_size=32",
        "data.eval_batch_size=32",
    )
    metrics = run(cfg)
    assert metrics["train/nfe_forward"] > 0
    assert not any(math.isnan(v) for v in metrics.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_solve_syncs_once_per_solve_on_cuda() -> None:
    """After capture, a training solve (forward and backward) synchronises with the host
    once: the block's NaN/inf check. torchdiffeq's loop synchronises every step."""
    import warnings

    torch.manual_seed(6)
    fixed = {"rtol": None, "atol": None, "step_size": 0.05}
    eager, captured = _pair(
        Solver("rk4", **fixed), Solver("rk4", capture=True, **fixed), MLPField(), t=(0.0, 1.0)
    )
    eager, captured = eager.cuda(), captured.cuda()

    def syncs(block: ODEBlock) -> int:
        y0 = torch.randn(8, 3, device="cuda", requires_grad=True)
        block(y0).sum().backward()  # capture (or warm up) first
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                block(y0).sum().backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(captured) <= 1
    assert syncs(eager) >= 20

"""The "is it an ODE?" checks (Ott et al. 2021): solver override, finer solvers, reconstruction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from scipy.linalg import expm
from torch import nn

from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Solver
from odelab.ode.validity import (
    BlockInput,
    capture_inputs,
    evaluate_batches,
    finer_settings,
    mean_adaptive_steps,
    reconstruction_error,
)
from odelab.train import run

# A rotation with decay: dz/dt = A z has the closed-form flow z(t) = expm(A t) z0.
A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]], dtype=torch.float64)


class Linear(nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ A.T


def _z0() -> torch.Tensor:
    return torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)


def test_fine_solver_matches_closed_form_flow_and_reconstructs() -> None:
    block = ODEBlock(Linear(), Solver("dopri5", rtol=1e-9, atol=1e-9), t=(0.0, 3.0))
    z0 = _z0()
    exact = z0 @ torch.from_numpy(expm(A.numpy() * 3.0)).T
    assert torch.allclose(block(z0), exact, atol=1e-7)
    assert reconstruction_error(block, z0, block.t.double()) < 1e-7


def test_reconstruction_error_grows_for_coarse_solver() -> None:
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    errors = [
        reconstruction_error(ODEBlock(Linear(), Solver("euler", step_size=h), t=t), _z0(), t)
        for h in (0.01, 0.1, 0.5)
    ]
    # Forward Euler on a rotation grows the radius by sqrt(1 + h^2 |λ|^2) per step, and so
    # does the backward pass: the round trip misses by ~ exp(T h |λ|^2) - 1, first order in h.
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] > 1e-3 and errors[2] > 1.0
    lam2 = 0.1**2 + 2.0**2
    assert errors[0] == pytest.approx(abs(1 - (1 + 0.01**2 * lam2) ** 300), rel=0.3)


def test_override_restores_solver_even_on_exception() -> None:
    solver = Solver("euler", step_size=0.5)
    block = ODEBlock(Linear(), solver, t=(0.0, 1.0))
    block.fast_state["marker"] = 1
    with pytest.raises(RuntimeError, match="boom"):
        with block.solver_override(method="dopri5", rtol=1e-5, atol=1e-5) as inside:
            assert block.solver is inside and inside.method == "dopri5"
            assert block.fast_state == {}
            raise RuntimeError("boom")
    assert block.solver is solver
    assert block.fast_state == {"marker": 1}
    with pytest.raises(ConfigError, match="solver.method"):
        with block.solver_override(method="no_such_method"):
            pass
    assert block.solver is solver


def test_override_changes_the_solve() -> None:
    block = ODEBlock(Linear(), Solver("euler", step_size=0.5), t=(0.0, 3.0))
    z0 = _z0()
    coarse = block(z0)
    with block.solver_override(method="dopri5", rtol=1e-9, atol=1e-9):
        fine = block(z0)
    exact = z0 @ torch.from_numpy(expm(A.numpy() * 3.0)).T
    assert torch.allclose(fine, exact, atol=1e-6)
    assert (coarse - exact).norm() > 0.5
    assert torch.equal(block(z0), coarse)


def test_finer_settings_rules() -> None:
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    fixed = ODEBlock(Linear(), Solver("rk4", step_size=0.2), t=t)
    settings = finer_settings(fixed, BlockInput(_z0(), t))
    assert settings["finer_fixed4x"] == {"method": "rk4", "step_size": pytest.approx(0.05)}
    assert settings["finer_dopri5"] == {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5}
    grid = ODEBlock(Linear(), Solver("euler"), t=torch.linspace(0, 2, 5, dtype=torch.float64))
    inp = BlockInput(_z0(), grid.t.double())
    assert finer_settings(grid, inp)["finer_fixed4x"]["step_size"] == pytest.approx(0.125)
    adaptive = ODEBlock(Linear(), Solver("dopri5", rtol=1e-3, atol=1e-3), t=t)
    adaptive.reset_nfe()
    adaptive(_z0())
    steps = mean_adaptive_steps(adaptive.solver, adaptive.nfe_forward)
    assert steps >= 2
    step = finer_settings(adaptive, BlockInput(_z0(), t))["finer_fixed4x"]
    assert step == {"method": "rk4", "step_size": pytest.approx(2.0 / (4 * steps))}
    assert mean_adaptive_steps(adaptive.solver, 2 + 6 * 7) == 7
    assert finer_settings(adaptive, BlockInput(_z0(), t))["finer_dopri5"]["rtol"] == 1e-5
    # Trained at 1e-5 already (the CNFs): the re-test goes 10x finer, not to the same setting.
    fine = ODEBlock(Linear(), Solver("dopri5", rtol=1e-5, atol=1e-6), t=t)
    assert finer_settings(fine, BlockInput(_z0(), t))["finer_dopri5"] == {
        "method": "dopri5",
        "rtol": pytest.approx(1e-7),
        "atol": pytest.approx(1e-7),
    }


class TinyODENet(nn.Module):
    """Linear -> ODE block (tanh MLP field) -> linear head, on 2-D inputs."""

    def __init__(self, solver: Solver) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(2, 8)
        field = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 8))
        self.block = ODEBlock(_Autonomous(field), solver, t=(0.0, 1.0))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


class _Autonomous(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def test_model_trained_with_two_euler_steps_moves_under_finer_solvers() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like: needs a nonlinear flow
    net = TinyODENet(Solver("euler", step_size=0.5))
    optim = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(60):
        optim.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optim.step()
    metrics = evaluate_batches(net, [(x, y)], predict=net)
    # The trained field is large (it had to separate XOR in two steps): a finer solver
    # moves the end state by more than a percent.
    assert metrics["finer_dopri5/state_rel_change"] > 1e-2
    assert metrics["finer_fixed4x/state_rel_change"] > 1e-2
    assert metrics["finer_fixed4x/step_size"] == pytest.approx(0.125)
    assert metrics["reconstruction_rel_err"] > 1e-2
    assert set(metrics) >= {"train_solver/acc", "finer_dopri5/acc", "finer_fixed4x/acc"}
    # The same net evaluated with its own solver is the identity check: zero change.
    with capture_inputs(net) as inputs:
        net(x)
    assert torch.equal(inputs["block"].y0, net.stem(x).detach())
    assert net.block.solver.method == "euler"  # restored after the evaluation


def _tiny(make_cfg, experiment: str, *overrides: str) -> dict:
    cfg = make_cfg(
        f"experiment={experiment}",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "+callbacks@callbacks.ode_validity=ode_validity",
        *overrides,
        subdir=experiment,
        logger="csv",
    )
    run(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.slow
def test_callback_logs_in_mnist_like_run(make_cfg) -> None:
    metrics = _tiny(
        make_cfg,
        "mnist_odenet",
        "+preset=mnist_quick",
        "data.train_subset=32",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "model.net.channels=8",
        "tol=1e-2",
    )
    for key in ("finer_dopri5/acc", "finer_fixed4x/acc", "finer_dopri5/state_rel_change"):
        assert f"test/{key}" in metrics
    assert metrics["test/reconstruction_rel_err"] >= 0.0


@pytest.mark.slow
def test_callback_logs_in_spiral_run(make_cfg) -> None:
    metrics = _tiny(make_cfg, "spiral", "data.n_points=100", "data.extrapolate_to=26")
    assert "test/finer_fixed4x/state_rel_change" in metrics
    assert "test/finer_dopri5/state_rel_change" in metrics
    assert 0.0 <= metrics["test/reconstruction_rel_err"] < 1.0


@pytest.mark.slow
def test_script_evaluates_a_checkpoint_of_an_earlier_run(make_cfg, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import ode_validity

    cfg = make_cfg(
        "experiment=spiral",
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "data.batches_per_epoch=2",
        "data.n_points=100",
        "data.extrapolate_to=26",
        "solver=euler",
        subdir="spiral_ckpt",
    )
    run(cfg)
    folder = Path(cfg.paths.output_dir)
    out = tmp_path / "validity.json"
    assert ode_validity.main(["--run", str(folder), "--batches", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["validity"]["test/reconstruction_rel_err"] >= 0.0
    assert "test/finer_fixed4x/state_rel_change" in record["validity"]
    assert "test/traj_mae" in record["metrics"]
    assert ode_validity.main(["--run", str(tmp_path / "nothing")]) == 2

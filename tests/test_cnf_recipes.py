"""The FFJORD toy recipe and the fast recipe: learned end time, configs, samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import Tensor, nn

from odelab.data.toy2d import SAMPLERS, TRUE_LOG_DENSITIES, sample
from odelab.models.cnf import CNF, MIN_T_END, TraceEstimator
from odelab.models.time_fields import ConcatSquashField
from odelab.ode import Sensitivity, Solver
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


@pytest.mark.parametrize("seminorm", [False, True])
def test_learned_end_time_gradient_through_the_adjoint(seminorm: bool) -> None:
    grads = []
    for sensitivity in (Sensitivity(), Sensitivity("adjoint", seminorm=seminorm)):
        flow = CNF(LinearField(A.clone()), TIGHT, sensitivity, t_end=0.5, learn_t_end=True)
        flow = flow.double()
        grads.append(torch.autograd.grad(mean_log_prob(flow), flow.raw_t_end)[0])
    assert float(grads[1]) == pytest.approx(float(grads[0]), rel=1e-6)


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


# --- the report of the cpu budgets, from fabricated records (no training) ---------------------


def _write_job(sweep, num: int, overrides: dict[str, str], metrics: dict, config: dict) -> None:
    import json

    import yaml

    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()])
    )
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "metrics.json").write_text(json.dumps(metrics))


def _row(report: str, first: str, second: str | None = None) -> list[str]:
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first and (second is None or cells[1] == second):
            return cells
    raise AssertionError(f"no row {first!r} in:\n{report}")


def recipe_run(curve: list, test_nll: float, steps: int, nfe: float) -> dict:
    """A `bench_cnf.py --part recipes` record of one recipe (the RecipeRun schema)."""
    device = {"type": "cpu", "name": "test", "cpu_count": 2, "torch_threads": 1, "torch": "x"}
    return {
        "run": "logs/bench/recipe", "device": device, "steps": steps, "curve": curve,
        "test_nll": test_nll, "test_nfe": nfe, "nfe_per_step": nfe, "nfe_per_step_mean": nfe,
        "train_seconds": 10.0, "wall_seconds": 11.0,
    }  # fmt: skip


@pytest.mark.xfail(
    strict=True,
    reason="written for the pre-template cnf_cpu report, which guessed sections from overrides; "
    "the report now takes sections from conf/reproduce/cnf.yaml tags by sweep index, so the "
    "fabricated jobs must move into the tagged sweep folders (issue 40, open)",
)
def test_cpu_report_tables_fronts_and_benchmark_come_from_the_records(tmp_path) -> None:
    import json

    from odelab.reports import REPRODUCTIONS, load_sweeps

    budget = tmp_path / "cpu"
    config = {
        "trace": {"estimator": "exact"},
        "model": {"flow": {"learn_t_end": False}},
        "solver": {"method": "rk4", "step_size": 0.25},
    }
    hutch = {**config, "trace": {"estimator": "hutchinson"}}
    num = 0
    for seed, (exact_nll, hutch_nll) in enumerate(((2.90, 2.95), (2.92, 3.01))):
        for cfg, nll in ((config, exact_nll), (hutch, hutch_nll)):
            trace = cfg["trace"]["estimator"]
            _write_job(
                budget / "0",
                num,
                {
                    "experiment": "cnf_fast",
                    "data.name": "8gaussians",
                    "trace": trace,
                    "seed": str(seed),
                },
                {"test/nll": nll, "test/nfe_forward": 80.0, "train/nfe_forward_epoch": 16.0},
                cfg,
            )
            num += 1
    # RNODE: lambda = 0 at NLL 2.90 and 100 test NFE; 0.1 matches (2.93) with 40 NFE; 0.3
    # is cheaper (20 NFE) but 0.2 nats worse, so the read-off must pick 0.1.
    num = 0
    # Training NFE per step 120 / 60 / 30 (+ 4 on seed 1): a training-step ratio of 2.00.
    for weight, nll, nfe in ((0, 2.90, 100.0), (0.1, 2.93, 40.0), (0.3, 3.10, 20.0)):
        for seed, jitter in enumerate((0.0, 0.01)):
            _write_job(
                budget / "1",
                num,
                {
                    "experiment": "cnf_rnode",
                    "data.name": "2spirals",
                    "model.kinetic_weight": str(weight),
                    "seed": str(seed),
                },
                {
                    "test/nll": nll + jitter,
                    "test/nfe_forward": nfe + 10 * seed,
                    "train/nfe_forward_epoch": 1.2 * nfe + 4 * seed,
                },
                config,
            )
            num += 1
    # Seminorm: backward NFE 300/310 with the full norm, 200/205 with the seminorm.
    num = 0
    for on, nfe in ((False, 300.0), (True, 200.0)):
        for seed in (0, 1):
            _write_job(
                budget / "2",
                num,
                {
                    "experiment": "cnf_ffjord",
                    "sensitivity": "adjoint",
                    "sensitivity.seminorm": str(on).lower(),
                    "data.name": "8gaussians",
                    "seed": str(seed),
                },
                {"test/nll": 2.9, "train/nfe_backward_epoch": nfe + (10 - 5 * on) * seed},
                config,
            )
            num += 1
    # Selection: lambda = 0.1 has the lowest test NLL (never read); step 0.125 the lowest
    # validation NLL at twice the training evaluations; lambda = 0.03 at step 0.25 is within
    # 0.05 nats of it at half the cost, so the rule picks it. lambda = 0.3 is as cheap but
    # 0.1 nats worse.
    settings = (
        (0.25, 0.03, 2.70, 2.80),
        (0.25, 0.1, 2.745, 2.60),
        (0.25, 0.3, 2.79, 2.90),
        (0.125, 0.03, 2.69, 2.85),
    )
    for num, (step, weight, val, test) in enumerate(settings):
        _write_job(
            budget / "3",
            num,
            {
                "experiment": "cnf_fast",
                "data.name": "2spirals",
                "solver.step_size": str(step),
                "model.kinetic_weight": str(weight),
                "seed": "0",
            },
            {"val/nll": val, "test/nll": test, "val/nfe_forward": 80.0},
            {
                **config,
                "solver": {"method": "rk4", "step_size": step},
                "model": {"flow": {"learn_t_end": False, "t_end": 1.0}, "kinetic_weight": weight},
                "trainer": {"max_epochs": 40},
                "data": {"batches_per_epoch": 100},
            },
        )
    curve = [{"epoch": 1, "train_seconds": 10.0, "val_nll": 3.5}]
    bench = {
        "margin": 0.05,
        "recipes": [
            {
                "target": "8gaussians",
                "ffjord": recipe_run(curve, 2.88, 10000, 90),
                "fast": recipe_run(curve, 2.90, 2000, 16),
                "threshold_val_nll": 2.95,
                "ffjord_seconds_to_threshold": 3000.0,
                "fast_seconds_to_threshold": 600.0,
                "speedup": 5.0,
                "speedup_vs_full_reference": 9.0,
                "test_nll_gap": 0.02,
            }
        ],
    }
    (budget / "bench").mkdir()
    (budget / "bench" / "bench_cnf_recipes.json").write_text(json.dumps(bench))
    # Seminorm on the same weights: 8gaussians saves 20 and 21 backward evaluations (the
    # gradients differ a little); on 2spirals both norms take the same steps.
    same_weights = [
        {
            "run": f"logs/bench/{target}",
            "seed": 0,
            "nfe_forward_full": 30.0,
            "nll_full": 2.9,
            "nfe_forward_seminorm": 30.0,
            "nll_seminorm": 2.9,
            "target": target,
            "experiment": "cnf_ffjord",
            "train_steps": 1000,
            "kinetic_weight": 0.0,
            "trained_sensitivity": "adjoint",
            "trained_with_seminorm": False,
            "batch_size": 100,
            "batches": [{}] * 10,
            "nfe_backward_full": full,
            "nfe_backward_seminorm": semi,
            "grad_rel_diff": diff,
        }
        for target, full, semi, diff in (
            ("8gaussians", 60.0, 40.0, 1e-4),
            ("8gaussians", 64.0, 43.0, 2e-4),
            ("2spirals", 21.0, 21.0, 0.0),
            ("2spirals", 21.0, 21.0, 0.0),
        )
    ]
    (budget / "bench" / "bench_cnf_seminorm.json").write_text(
        json.dumps({"seminorm": same_weights})
    )

    report = REPRODUCTIONS["cnf"].build(load_sweeps(budget), "cpu", tmp_path / "out")
    row = _row(report, "8gaussians")
    # Paired over seeds: differences 0.05 and 0.09, a t-interval with one degree of freedom.
    ci = stats.ttest_1samp([0.05, 0.09], 0.0).confidence_interval(0.95)
    interval = f"+0.070 [{ci.low:.3f}, {ci.high:.3f}] (within noise)"
    assert row[1:4] == ["2.910 ± 0.014", "2.980 ± 0.042", interval]
    assert row[-1] == "2 / 2"
    assert "Hutchinson training and exact-trace training are within noise" in report
    fixed = _row(report, "2spirals", "fixed")
    assert fixed[2:6] == ["0", "2.905 ± 0.007", "105 ± 7", "122 ± 3"]
    assert (
        "test NFE (dopri5 1e-5): lambda = 0.1 matches the NLL with 45 against 105, an NFE "
        "ratio of 2.33"
    ) in report
    assert (
        "NFE per training step: lambda = 0.1 matches the NLL with 50 against 122, an NFE "
        "ratio of 2.44"
    ) in report
    seminorm = _row(report.split("## Adjoint seminorm")[1], "8gaussians")
    assert seminorm[1:3] == ["305 ± 7", "202 ± 4"]
    ci = stats.ttest_1samp([-100.0, -105.0], 0.0).confidence_interval(0.95)
    assert (
        "the seminorm has a lower (better) backward NFE per step on 8gaussians than the full "
        f"norm (difference -102, 95% CI [{ci.low:.3g}, {ci.high:.3g}], n = 2 paired)."
    ) in report
    weights = report.split("### The same weights, both norms")[1].split("\n## ")[0]
    label = "cnf_ffjord, 1,000 steps, trained with the adjoint"
    assert _row(weights, "8gaussians")[1:8] == [
        label, "2", "62.0 ± 2.8", "41.5 ± 2.1", "33.1 %", "0 / 2", "0.0002",
    ]  # fmt: skip
    assert _row(weights, "2spirals")[5:7] == ["0.0 %", "2 / 2"]
    ci = stats.ttest_1samp([-20.0, -21.0], 0.0).confidence_interval(0.95)
    assert (
        "the seminorm has a lower (better) backward NFE on the same weights on 8gaussians than "
        f"the full norm (difference -20.5, 95% CI [{ci.low:.3g}, {ci.high:.3g}], n = 2 paired)."
        " Identical gradients in 0 of 2 runs."
    ) in weights
    assert (
        "the seminorm and the full norm are within noise on backward NFE on the same weights on "
        "2spirals (difference 0, 95% CI [0, 0], n = 2 paired). Identical gradients in 2 of 2 "
        "runs (in those, the parameters' adjoint never decided a backward step)."
    ) in weights
    selection = report.split("## Choosing the fast recipe")[1].split("\n## ")[0]
    assert _row(selection, "2spirals", "0.125")[2:6] == ["0.03", "4000", "128k", "2.690"]
    assert _row(selection, "2spirals", "0.25")[2:6] == ["0.03", "4000", "64k", "2.700"]
    assert "2.600" not in selection and "2.800" not in selection  # test NLL is not shown
    assert "Lowest validation NLL: 2.690. Selected: rk4 step 0.25, lambda 0.03, 4000" in selection
    bench_row = _row(report, "8gaussians", "2.950")
    assert bench_row[2:6] == ["3000", "600", "5.00", "9.00"]
    assert bench_row[-1] == "yes"
    for figure in ("targets_density.png", "rnode_front.png", "recipes_curves.png"):
        assert (tmp_path / "out" / figure).is_file()

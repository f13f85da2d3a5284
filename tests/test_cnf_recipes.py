"""The FFJORD toy recipe and the fast recipe: learned end time, configs, samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import Tensor

from odelab.data.toy2d import SAMPLERS, TRUE_LOG_DENSITIES, sample
from odelab.models.cnf import CNF, MIN_T_END, TraceEstimator
from odelab.models.residual_flow import LinearField  # dz/dt = A z: a closed-form density
from odelab.models.time_fields import ConcatSquashField
from odelab.ode import Sensitivity, Solver
from odelab.train import run

TIGHT = Solver(method="dopri5", rtol=1e-10, atol=1e-10, max_num_steps=100_000)
RK4 = Solver(method="rk4", rtol=None, atol=None, step_size=0.05)


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


# --- the cpu report from fabricated records, laid out as the pipeline stores them -------------
# `experiments/reports/cnf_cpu/records/<sweep index>/<job>/` (overrides, resolved config,
# metrics, job and device records, the CSV history) and `records/bench/*.json`; a job's section
# is the tag of its sweep index in conf/reproduce/cnf.yaml (budget cpu).

DEVICE = {"type": "cpu", "name": "test", "cpu_count": 2, "torch_threads": 1, "torch": "x"}
STEP_SECONDS = 0.05  # the mean training step time every fabricated history logs
# selection (2spirals, seed 0): rk4 step, lambda, val NLL, test NLL. Step 0.125 has the lowest
# validation NLL at twice the training evaluations; lambda 0.03 at step 0.25 is within 0.05 nats
# of it at half the cost (the pick); lambda 0.1 has the best test NLL, which is never read.
SELECTION = [(0.25, 0.03, 2.70, 2.80), (0.25, 0.1, 2.745, 2.60), (0.125, 0.03, 2.69, 2.85)]
# targets: (target, seed) -> (exact NLL, Hutchinson NLL); 2spirals in the second targets sweep.
TARGETS = [
    {("8gaussians", 0): (2.90, 2.95), ("8gaussians", 1): (2.92, 3.01)},
    {("2spirals", 0): (2.70, 2.72)},
]
L1 = {"8gaussians": 0.08}  # density L1 of the exact-trace runs (closed-form targets only)
# rnode (2spirals, fixed end time): lambda -> (test NLL, training NFE per step) at seeds 0, 1.
RNODE = {0.0: ((2.90, 2.91), (120.0, 124.0)), 0.03: ((2.93, 2.95), (60.0, 70.0))}
# capacity (8gaussians): (experiment, config flow) -> test NLL at seeds 0, 1.
CAPACITY = {  # model label -> (experiment, its flow config, test NLL at seeds 0, 1)
    "CNF M=64": ("cnf_fast", {"field": {"units": 64}}, (2.86, 2.87)),
    "planar K=64": ("planar_flow", {"layers": 64}, (2.95, 2.99)),
}
TRACES = ("exact", "hutchinson")
SEMINORM = {False: (300.0, 310.0), True: (200.0, 205.0)}  # backward NFE per step, seeds 0, 1


def _write_job(records, tag: str, part: int, overrides: dict, metrics: dict, config: dict) -> None:
    """The next job of the `part`-th sweep of budget cpu tagged `tag`, as a finished run."""
    import json

    import yaml

    from odelab.reports.base import conf_tags

    sweep = records / str([i for i, t in enumerate(conf_tags("cnf")["cpu"]) if t == tag][part])
    job = sweep / str(len(list(sweep.glob("*"))) if sweep.is_dir() else 0)
    listed = [f"{k}={v}" for k, v in overrides.items()] + ["logger=csv"]
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(listed))
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "device.json").write_text(json.dumps(DEVICE))
    record = {"num": int(job.name), "overrides": listed, "status": "completed", "seconds": 9.0}
    (job / "job.json").write_text(json.dumps(record))
    history = f"epoch,step,train/step_time_epoch\n0,99,{STEP_SECONDS}\n"  # 100 steps
    (job / "csv" / "metrics.csv").write_text(history)


def _config(target: str, seed: int, **model) -> dict:
    flow = {"t_end": 1.0, "learn_t_end": False, **model.pop("flow", {})}
    return {
        "seed": seed,
        "data": {"name": target, "batches_per_epoch": 100},
        "trainer": {"max_epochs": 40},
        "trace": {"estimator": model.pop("trace", "exact")},
        "solver": {"method": "rk4", "step_size": model.pop("step", 0.25)},
        "model": {"flow": flow, **model},
    }


def recipe_run(curve: list, test_nll: float, steps: int, nfe: float) -> dict:
    """A `bench_cnf.py --part recipes` record of one recipe (the RecipeRun schema)."""
    return {
        "run": "logs/bench/recipe", "device": DEVICE, "steps": steps, "curve": curve,
        "test_nll": test_nll, "test_nfe": nfe, "nfe_per_step": nfe, "nfe_per_step_mean": nfe,
        "train_seconds": 10.0, "wall_seconds": 11.0,
    }  # fmt: skip


def _fabricate_cpu_records(records) -> None:
    import json

    for step, lam, val, test in SELECTION:
        _write_job(
            records, "selection", 0,
            {"experiment": "cnf_fast", "data.name": "2spirals", "solver.step_size": step,
             "model.kinetic_weight": lam, "seed": 0},
            {"val/nll": val, "test/nll": test, "val/nfe_forward": 80.0,
             "train/nfe_forward_epoch": 4 * 1.0 / step},  # rk4: 4 evaluations a step
            _config("2spirals", 0, step=step, kinetic_weight=lam),
        )  # fmt: skip
    for part, nlls in enumerate(TARGETS):
        for (target, seed), pair in nlls.items():
            for trace, nll in zip(TRACES, pair, strict=True):
                metrics = {"test/nll": nll, "test/nfe_forward": 50.0 + seed,
                           "train/nfe_forward_epoch": 16.0}  # fmt: skip
                if trace == "exact" and target in L1:
                    metrics["test/density_l1"] = L1[target] + 0.01 * seed
                overrides = {"experiment": "cnf_fast", "data.name": target, "trace": trace,
                             "seed": seed}  # fmt: skip
                _write_job(records, "targets", part, overrides, metrics,
                           _config(target, seed, trace=trace))  # fmt: skip
    for experiment, flow, nlls in CAPACITY.values():
        for seed, nll in enumerate(nlls):
            _write_job(
                records, "capacity", 0 if experiment == "planar_flow" else 1,
                {"experiment": experiment, "data.name": "8gaussians", "seed": seed},
                {"test/nll": nll}, _config("8gaussians", seed, flow=flow),
            )  # fmt: skip
    for lam, (nlls, nfes) in RNODE.items():
        for seed in (0, 1):
            _write_job(
                records, "rnode", 1,
                {"experiment": "cnf_rnode", "data.name": "2spirals", "model.kinetic_weight": lam,
                 "seed": seed},
                {"test/nll": nlls[seed], "test/nfe_forward": 80.0,
                 "train/nfe_forward_epoch": nfes[seed]},
                _config("2spirals", seed, kinetic_weight=lam),
            )  # fmt: skip
    for on, nfes in SEMINORM.items():
        for seed, nfe in enumerate(nfes):
            _write_job(
                records, "seminorm", 0,
                {"experiment": "cnf_ffjord", "sensitivity": "adjoint",
                 "sensitivity.seminorm": str(on).lower(), "data.name": "8gaussians",
                 "seed": seed},
                {"test/nll": 2.9, "train/nfe_forward_epoch": 30.0,
                 "train/nfe_backward_epoch": nfe},
                {**_config("8gaussians", seed), "sensitivity": {"seminorm": on}},
            )  # fmt: skip
    curve = [{"epoch": 1, "train_seconds": 10.0, "val_nll": 3.5}]
    recipe = {
        "target": "8gaussians", "ffjord": recipe_run(curve, 2.88, 10000, 90),
        "fast": recipe_run(curve, 2.90, 4000, 16), "threshold_val_nll": 2.95,
        "ffjord_seconds_to_threshold": 3000.0, "fast_seconds_to_threshold": 600.0,
        "speedup": 5.0, "speedup_vs_full_reference": 9.0, "test_nll_gap": 0.02,
    }  # fmt: skip
    weights = [
        {"run": f"logs/bench/{target}", "target": target, "seed": 0, "experiment": "cnf_ffjord",
         "trained_sensitivity": "adjoint", "trained_with_seminorm": False,
         "kinetic_weight": 0.0, "train_steps": 1000, "batch_size": 100, "batches": [{}] * 10,
         "nfe_forward_full": 30.0, "nfe_backward_full": full, "nll_full": 2.9,
         "nfe_forward_seminorm": 30.0, "nfe_backward_seminorm": semi, "nll_seminorm": 2.9,
         "grad_rel_diff": diff}
        for target, full, semi, diff in (
            ("8gaussians", 60.0, 40.0, 1e-4), ("8gaussians", 64.0, 43.0, 2e-4),
            ("2spirals", 21.0, 21.0, 0.0), ("2spirals", 21.0, 21.0, 0.0),
        )
    ]  # fmt: skip
    (records / "bench").mkdir()
    bench = {"recipes": [recipe], "margin": 0.05}
    (records / "bench" / "bench_cnf_recipes.json").write_text(json.dumps(bench))
    (records / "bench" / "bench_cnf_seminorm.json").write_text(json.dumps({"seminorm": weights}))


def _table(report: str, heading: str) -> list[dict[str, str]]:
    """The rows ({column: cell}) of the first markdown table after the heading `heading`."""
    lines = report.split(f"\n{heading}\n", 1)[1].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    header, *body = [r for r in rows[start:end] if set(r[0]) != {"-"}]
    return [dict(zip(header, row, strict=True)) for row in body]


def _pm(values, spec: str) -> str:
    return f"{np.mean(values):{spec}} ± {np.std(values, ddof=1):{spec}}"


def _interval(diffs) -> tuple[float, float]:
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    return ci.low, ci.high


def test_cpu_report_tables_fronts_and_benchmark_come_from_the_records(tmp_path) -> None:
    import json

    from odelab.reports import REPRODUCTIONS
    from odelab.reports.base import load_sweeps
    from odelab.reports.cnf_cpu import cnf_frame, sections
    from odelab.reproduce import records_dir, render

    records = records_dir("cnf", "cpu", tmp_path / "reports")
    _fabricate_cpu_records(records)
    out = tmp_path / "out"
    report = render(REPRODUCTIONS["cnf"], "cpu", records, out)

    # Both targets sweeps (records/1 and records/2) form the one targets section.
    rows = _table(report, "## The eight FFJORD targets, exact vs Hutchinson trace in training")
    targets = {(r["target"], r["trace"]): r for r in rows}
    assert list(targets) == [(t, x) for t in ("2spirals", "8gaussians") for x in TRACES]
    for part in TARGETS:
        for i, trace in enumerate(TRACES):
            row, nlls = targets[next(iter(part))[0], trace], [pair[i] for pair in part.values()]
            assert row["test NLL"] == (_pm(nlls, ".3f") if len(nlls) > 1 else f"{nlls[0]:.3f}")
            assert row["NFE/step"] == ("16 ± 0" if len(nlls) > 1 else "16")
            assert (row["train s"], row["n"]) == (f"{100 * STEP_SECONDS:.0f}", str(len(nlls)))
    assert targets["8gaussians", "exact"]["density L1"] == _pm([0.08, 0.09], ".3f")
    assert targets["2spirals", "exact"]["density L1"] == "n/a"

    selection = _table(report, "## Choosing the fast recipe (validation NLL only)")
    assert [(r["rk4 step"], r["lambda"], r["val NLL"], r["train NFE"]) for r in selection] == [
        (str(step), str(lam), f"{val:.3f}", f"{4 / step * 4000:.3g}")
        for step, lam, val, _ in sorted(SELECTION)
    ]
    tests = {f"{test:.3f}" for *_, test in SELECTION}
    assert not tests & {c for r in selection for c in r.values()}  # test NLL is not shown
    picked = sections(cnf_frame(load_sweeps(records)), None)["selection"]
    (pick,) = [r for r in picked if r["pick"]]
    assert (pick["step"], pick["lam"], pick["best"]) == (0.25, 0.03, min(s[2] for s in SELECTION))

    rnode = _table(report, "## RNODE: function evaluations against likelihood")
    assert [(r["lambda"], r["test NLL"], r["NFE/step"], r["learned T"]) for r in rnode] == [
        (str(lam), _pm(nlls, ".3f"), _pm(nfes, ".0f"), "fixed")
        for lam, (nlls, nfes) in RNODE.items()
    ]
    rows = _table(report, "## Planar flow (K layers) vs CNF (M units), Chen et al. 2018 Figure 4")
    assert {r["model"]: r["test NLL"] for r in rows} == {
        model: _pm(nlls, ".3f") for model, (_, _, nlls) in CAPACITY.items()
    }
    rows = _table(
        report, "## Adjoint seminorm (Kidger et al. 2021): backward NFE per training step"
    )
    assert [(r["seminorm"], r["bwd NFE/step"]) for r in rows] == [
        (str(on), _pm(nfes, ".1f")) for on, nfes in SEMINORM.items()
    ]
    rows = _table(
        report, "### Both norms on the same trained weights (`bench_cnf.py --part seminorm`)"
    )
    weights = {r["target"]: r for r in rows}
    assert weights["8gaussians"]["bwd NFE full"] == _pm([60.0, 64.0], ".1f")
    assert weights["8gaussians"]["saving"] == f"{100 * (1 - 41.5 / 62.0):.1f} %"
    assert weights["8gaussians"]["identical gradients"] == "0 / 2"
    assert [weights["2spirals"][k] for k in ("saving", "identical gradients")] == ["0.0 %", "2 / 2"]
    (recipe,) = _table(
        report, "## Time to the FFJORD recipe's likelihood (`bench_cnf.py --part recipes`)"
    )
    assert [recipe[k] for k in ("threshold", "FFJORD s", "fast s", "speedup")] == [
        "2.950", "3e+03", "600", "5",
    ]  # fmt: skip
    runs = {r["records"].strip("`").rsplit("/", 1)[1]: r for r in _table(report, "## Runs")}
    assert {sweep: (r["section"], r["runs"]) for sweep, r in runs.items()} == {
        "0": ("selection", "3"), "1": ("targets", "4"), "2": ("targets", "2"),
        "3": ("capacity", "2"), "4": ("capacity", "2"), "6": ("rnode", "4"),
        "7": ("seminorm", "4"),
    }  # fmt: skip

    # The verdicts, recomputed from the fabricated values.
    verdicts = {v["claim"]: v for v in json.loads((out / "claims.json").read_text())}
    hutchinson = [h - e for part in TARGETS for e, h in part.values()]
    cut = [a - b for a, b in zip(RNODE[0.03][1], RNODE[0.0][1], strict=True)]
    for claim, diffs in (("hutchinson_matches_exact", hutchinson), ("rnode_cuts_nfe", cut)):
        v = verdicts[claim]
        assert (v["n"], v["diff"]) == (len(diffs), pytest.approx(np.mean(diffs)))
        assert (v["low"], v["high"]) == pytest.approx(_interval(diffs), rel=1e-4)
    cnf, planar = (nlls for _, _, nlls in CAPACITY.values())
    assert verdicts["cnf_beats_planar"]["diff"] == pytest.approx(np.mean(np.subtract(cnf, planar)))
    assert verdicts["toy_density_fit"]["mean"] == pytest.approx(0.085)
    assert [verdicts["fast_recipe_speedup"][k] for k in ("mean", "n")] == [5.0, 1]
    for figure in ("targets_density.png", "capacity.png", "rnode_front.png", "recipes_curves.png"):
        assert (out / figure).is_file()

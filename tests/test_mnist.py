"""MNIST Table 1 models, memory meters and report (Chen et al. 2018)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from odelab.errors import ConfigError
from odelab.models.odenet import ConvODEField, ODENet
from odelab.ode import Sensitivity, Solver
from odelab.optim import linear_scaled_sgd
from odelab.profiling import SavedTensorMeter, training_step_memory
from odelab.reports import REPRODUCTIONS, JobResult
from odelab.reports.base import Jobs
from odelab.reports.claims import read_claims
from odelab.runs import load_run
from odelab.train import run

REPO = Path(__file__).resolve().parents[1]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def build_net(make_cfg, experiment: str, *overrides: str) -> torch.nn.Module:
    cfg = make_cfg(f"experiment={experiment}", *overrides, subdir=experiment)
    return instantiate(cfg.model.net)


# The reference script (torchdiffeq examples/odenet_mnist.py) has 208,266 and
# 576,778 parameters; the paper's MLP has 0.24 M.
@pytest.mark.parametrize(
    ("experiment", "low", "high", "reference"),
    [
        ("mnist_odenet", 0.20e6, 0.22e6, 208_266),
        ("mnist_rknet", 0.20e6, 0.22e6, 208_266),
        ("mnist_resnet", 0.57e6, 0.60e6, 576_778),
        ("mnist_mlp", 0.235e6, 0.245e6, None),
    ],
)
def test_parameter_counts_match_table_1(make_cfg, experiment, low, high, reference) -> None:
    count = n_params(build_net(make_cfg, experiment))
    assert low <= count <= high
    if reference is not None:
        assert count == reference


def test_rknet_and_odenet_share_the_field(make_cfg) -> None:
    odenet = build_net(make_cfg, "mnist_odenet")
    rknet = build_net(make_cfg, "mnist_rknet")
    assert type(odenet.field) is type(rknet.field) is ConvODEField
    shapes = {k: v.shape for k, v in odenet.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rknet.state_dict().items()}
    # Only the solve differs: adaptive + adjoint vs fixed-grid rk4 + direct.
    assert (odenet.block.solver.method, odenet.block.sensitivity.method) == ("dopri5", "adjoint")
    assert (rknet.block.solver.method, rknet.block.sensitivity.method) == ("rk4", "direct")
    rknet.load_state_dict(odenet.state_dict())  # same weights fit both


def test_tol_moves_rtol_and_atol_together(make_cfg) -> None:
    cfg = make_cfg("experiment=mnist_odenet", "tol=1e-5")
    assert cfg.solver.rtol == cfg.solver.atol == 1e-5
    assert instantiate(cfg.solver).rtol == 1e-5


def test_field_depends_on_time() -> None:
    torch.manual_seed(0)
    field = ConvODEField(8)
    z = torch.randn(2, 8, 6, 6)
    assert not torch.allclose(field(torch.tensor(0.0), z), field(torch.tensor(1.0), z))


def test_normalisation_lives_in_the_net() -> None:
    net = ODENet(Solver(), Sensitivity(), channels=8, mean=0.5, std=0.25)
    x = torch.full((1, 1, 28, 28), 0.75)
    assert torch.allclose(net.normalize(x), torch.ones_like(x))
    with pytest.raises(ConfigError, match="t_end"):
        ODENet(Solver(), Sensitivity(), channels=8, t_end=0.0)


def test_linear_scaled_sgd_follows_the_batch_size() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert linear_scaled_sgd(params, lr=0.1, batch_size=32).param_groups[0]["lr"] == pytest.approx(
        0.025
    )
    assert linear_scaled_sgd(params, lr=0.1, batch_size=256).param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError):
        linear_scaled_sgd(params, lr=0.0)


def test_saved_tensor_meter_counts_exactly_what_autograd_saves() -> None:
    x = torch.randn(1000, requires_grad=True)
    meter = SavedTensorMeter()
    with meter.measure():
        y = x.exp()  # saves its 4000-byte output
        z = y.exp()  # saves another 4000 bytes
        loss = z.sum()  # saves no tensor
        assert meter.live_bytes == 8000
        loss.backward()
    assert meter.peak_bytes == 8000
    assert meter.live_bytes == 0  # the graph is freed after backward
    assert torch.allclose(x.grad, torch.exp(x) * torch.exp(torch.exp(x)))


def test_saved_tensor_meter_skips_parameters() -> None:
    layer = torch.nn.Linear(100, 100, bias=False)
    x = torch.randn(10, 100, requires_grad=True)
    meter = SavedTensorMeter(exclude=list(layer.parameters()))
    with meter.measure():
        layer(x).sum().backward()
    assert meter.peak_bytes == x.numel() * 4  # the input, not the 40 kB weight


def small_odenet(sensitivity: str, horizon: float) -> ODENet:
    torch.manual_seed(0)
    solver = Solver(method="rk4", step_size=0.25, rtol=None, atol=None)
    return ODENet(solver, Sensitivity(method=sensitivity), channels=8, t_end=horizon)


def step_memory(sensitivity: str, horizon: float, profile: bool = True):
    torch.manual_seed(1)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    net = small_odenet(sensitivity, horizon)
    memory = training_step_memory(
        net, lambda: torch.nn.functional.cross_entropy(net(x), y), profile_allocations=profile
    )
    return memory, net


def test_direct_needs_more_memory_than_adjoint_on_a_long_horizon() -> None:
    direct, net_d = step_memory("direct", 3.0)
    adjoint, net_a = step_memory("adjoint", 3.0)
    assert net_d.block.nfe_forward == net_a.block.nfe_forward == 48  # 12 rk4 steps
    assert direct.peak > 2 * adjoint.peak
    assert direct.saved_activations > 2 * adjoint.saved_activations
    # The adjoint's memory does not grow with the horizon; direct's grows with NFE.
    short_adjoint, _ = step_memory("adjoint", 1.0, profile=False)
    short_direct, _ = step_memory("direct", 1.0, profile=False)
    assert short_adjoint.saved_activations == adjoint.saved_activations
    assert direct.saved_activations > 2 * short_direct.saved_activations


def test_gradients_unchanged_by_the_meters() -> None:
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    grads = []
    for measured in (False, True):
        net = small_odenet("direct", 1.0)

        def loss_fn(net: ODENet = net) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(net(x), y)

        if measured:
            training_step_memory(net, loss_fn, profile_allocations=False)
        else:
            loss_fn().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1])


def tiny_run(make_cfg, experiment: str, *overrides: str) -> Path:
    cfg = make_cfg(
        f"experiment={experiment}",
        "+preset=mnist_quick",
        "data.train_subset=32",
        "data.batch_size=16",
        "data.eval_batch_size=32",
        "trainer.limit_test_batches=1",
        *overrides,
        subdir=experiment,
        logger="csv",
    )
    run(cfg)
    return Path(cfg.paths.output_dir)


def test_report_builds_table_from_two_real_runs(make_cfg, tmp_path: Path) -> None:
    mlp = tiny_run(make_cfg, "mnist_mlp")
    odenet = tiny_run(make_cfg, "mnist_odenet", "model.net.channels=8", "tol=1e-2")
    jobs = Jobs([JobResult(i, load_run(folder)) for i, folder in enumerate((mlp, odenet))])
    REPRODUCTIONS["mnist"].build(jobs, "quick", tmp_path / "repro")
    verdicts = {v.claim: v for v in read_claims(tmp_path / "repro" / "claims.json")}
    # The parameter claims carry the runs' own counts (one seed: the value, no interval).
    for claim, folder in (("mnist_params_mlp", mlp), ("mnist_params_odenet", odenet)):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert verdicts[claim].mean == pytest.approx(metrics["model/params"] / 1e6, rel=1e-5)
        assert verdicts[claim].n == 1
    assert verdicts["mnist_odenet_vs_mlp"].verdict == "not testable here"  # one seed, quick
    assert verdicts["mnist_adjoint_memory"].verdict == "not testable here"  # no record
    assert (tmp_path / "repro" / "nfe.png").is_file()

    # The memory study is a benchmark record of the budget (bench/mnist_memory.json).
    jobs.bench["mnist_memory"] = {
        "device": {"type": "cuda", "name": "Test GPU"},
        "batch_size": 4,
        "channels": 8,
        "weights": "random",
        "inputs": "noise",
        "measure": "cuda peak",
        "rows": [
            {
                "solver": "rk4",
                "sensitivity": s,
                "T": t,
                "nfe_forward": 16 * t,
                "nfe_backward": 0 if s == "direct" else 16 * t,
                "peak_mb": (10.0 * t if s == "direct" else 5.0 * (1 + (t - 1) / 2)),
                "saved_activations_mb": 1.0,
                "step_time_s": 0.1,
            }
            for s in ("direct", "adjoint")
            for t in (1, 2)
        ],
        "ratios": {"rk4": {"adjoint_max_over_min": 1.5, "direct_last_over_first": 2.0}},
    }
    REPRODUCTIONS["mnist"].build(jobs, "quick", tmp_path / "repro")
    memory = {v.claim: v for v in read_claims(tmp_path / "repro" / "claims.json")}
    # An adjoint peak 1.5 times higher at the longer horizon is over the 1.2 bound.
    assert memory["mnist_adjoint_memory"].mean == 1.5
    assert memory["mnist_adjoint_memory"].verdict == "contradicted"
    assert (tmp_path / "repro" / "mnist_memory.png").is_file()


def test_finished_run_is_skipped_without_its_data(make_cfg, tmp_path: Path) -> None:
    """A finished run restored into a clone that lacks the data is skipped by resume=true;
    a run that would train on the missing data is refused, naming data.root."""
    folder = tiny_run(make_cfg, "mnist_mlp")
    finished = (folder / "metrics.json").stat().st_mtime_ns
    missing = f"data.root={tmp_path / 'no-data'}"
    assert tiny_run(make_cfg, "mnist_mlp", "resume=true", missing) == folder
    assert (folder / "metrics.json").stat().st_mtime_ns == finished
    with pytest.raises(ConfigError, match="data.root="):
        tiny_run(make_cfg, "mnist_mlp", missing, "seed=1")

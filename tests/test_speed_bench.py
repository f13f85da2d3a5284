"""The speed benchmark's GPU part (run here on the CPU at tiny sizes, and on CUDA with
`pytest -m gpu`), the spiral overhead measurement with its bare-Lightning floor, the speed
report's GPU and floor sections, and the per-step logging of NFEMonitor and StepTimer."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bench import gpu_steps as gpu
from bench.overhead import lightning_steps, overhead, overhead_config, plain_steps
from odelab.callbacks import NFEMonitor, StepTimer
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.reports.speed import gpu_summary, overhead_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = ROOT / "experiments" / "bench_speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module
    spec.loader.exec_module(module)
    return module


def _gpu_args(bench: ModuleType, device: str, tmp_path: Path, *extra: str) -> argparse.Namespace:
    return bench.parse_args(
        [
            "--gpu-device",
            device,
            "--gpu-steps",
            "3",
            "--gpu-warmup",
            "1",
            "--gpu-block",
            "2",
            "--gpu-batch",
            "4",
            "--gpu-channels",
            "4",
            "--gpu-held-out",
            "16",
            "--mnist-root",
            str(tmp_path / "no_mnist_here"),  # random MNIST-shaped data: fast and offline
            *extra,
        ]
    )


def _check_record(record: dict[str, Any], seeds: list[int]) -> None:
    """Properties every GPU-part record has, whatever the device."""
    assert record["seeds"] == seeds
    odenet = record["models"]["ODE-Net (dopri5, adjoint)"]["variants"]
    rknet = record["models"]["RK-Net (rk4, direct)"]["variants"]
    for variants in (odenet, rknet):
        for name, runs in variants.items():
            assert [r["seed"] for r in runs] == seeds, name
            for r in runs:
                assert "error" not in r, (name, r)
                assert len(r["ms_per_step"]) == 1  # (3 steps - 1 warm-up) / blocks of 2
                assert r["median_ms"] > 0
                assert 0.0 <= r["accuracy"] <= 1.0
    # RK-Net: 4 rk4 steps of 4 stages over [0, 1], on every path; autograd adds none.
    for name in ("eager", "captured", "plain torchdiffeq"):
        for r in rknet[name]:
            assert (r["nfe_forward"], r["nfe_backward"]) == (16, 0), name
    exact = record["device"]["type"] == "cpu"
    for eager, plain in zip(odenet["eager"], odenet["plain torchdiffeq"], strict=True):
        # Same weights, batches and solver: odelab's block and torchdiffeq's own loop take
        # the same steps, forward and adjoint, and train to the same network. (cuDNN's
        # convolution gradients are not bitwise reproducible: on CUDA an adaptive solve may
        # take one dopri5 step, 6 evaluations, more or fewer.)
        nfe = 0 if exact else 6
        assert eager["nfe_forward"] > 0 and eager["nfe_backward"] > 0
        assert abs(eager["nfe_forward"] - plain["nfe_forward"]) <= nfe
        assert abs(eager["nfe_backward"] - plain["nfe_backward"]) <= nfe
        if exact:
            assert eager["accuracy"] == plain["accuracy"]
        assert eager["final_loss"] == pytest.approx(
            plain["final_loss"], rel=1e-4 if exact else 1e-2
        )
    for eager, captured in zip(rknet["eager"], rknet["captured"], strict=True):
        assert captured["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-3)
        # CUDA graphs on CUDA (one per input shape that trained); none elsewhere.
        assert not captured["capture_failed"]
        assert captured["graphs"] == (1 if record["device"]["type"] == "cuda" else 0)


def test_gpu_part_runs_on_the_cpu_and_renders(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.compile takes minutes on this CPU: the compiled variants are covered under -m gpu.
    models = copy.deepcopy(gpu.GPU_MODELS)
    for _, _, _, variants in models.values():
        for name in [n for n in variants if "compiled" in n]:
            del variants[name]
    monkeypatch.setattr(gpu, "GPU_MODELS", models)
    args = _gpu_args(bench, "cpu", tmp_path, "--gpu-seeds", "3")
    assert bench.runs_gpu_part(args)
    record = bench.gpu_steps(args)
    _check_record(record, [3])
    assert record["data"].startswith("random")
    summary = gpu_summary(record)["RK-Net (rk4, direct)"]
    for name in ("eager", "captured", "plain torchdiffeq"):
        assert summary["variants"][name]["n"] == 1
    # The plain torchdiffeq step is not a fast path: only `captured` competes for RK-Net.
    assert summary["best"][0] == "captured"


def test_gpu_part_trains_on_the_offline_mnist_split_where_present(bench: ModuleType) -> None:
    roots = gpu.mnist_roots(bench.parse_args([]))
    x, y, x_held, y_held, text = gpu.gpu_data(roots, torch.device("cpu"), 10)
    if text.startswith("random"):
        pytest.skip(f"no offline MNIST files under {roots}")
    assert text.startswith("MNIST offline split") and "7000 training images" in text
    assert x.shape == (7000, 1, 28, 28) and x_held.shape == (10, 1, 28, 28)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert set(y.tolist()) == set(range(10)) and y_held.shape == (10,)


def test_gpu_part_is_skipped_without_cuda_unless_a_device_is_named(bench: ModuleType) -> None:
    assert bench.runs_gpu_part(bench.parse_args([])) == torch.cuda.is_available()
    assert not bench.runs_gpu_part(bench.parse_args(["--gpu-device", "cpu", "--skip", "gpu"]))


def _run(seed: int, ms: float, acc: float) -> dict[str, Any]:
    return {
        "seed": seed,
        "ms_per_step": [ms],
        "median_ms": ms,
        "nfe_forward": 16.0,
        "nfe_backward": 0.0,
        "warmup_s": 1.0,
        "train_s": 2.0,
        "final_loss": 0.5,
        "accuracy": acc,
    }


def test_gpu_section_computes_speedups_and_verdicts() -> None:
    seeds = [0, 1, 2]
    record = {
        "device": {"name": "GPU X", "torch": "2"},
        "batch": 128,
        "channels": 64,
        "steps": 150,
        "warmup": 20,
        "block": 10,
        "seeds": seeds,
        "optimizer": "SGD",
        "data": "MNIST",
        "held_out": 1000,
        "models": {
            "RK-Net (rk4, direct)": {
                "target": 3.0,
                "variants": {
                    "eager": [_run(s, 40.0 + s, 0.9 + 0.01 * s) for s in seeds],
                    "captured": [
                        {**_run(s, 10.0, 0.9 + 0.011 * s - 0.001), "capture_failed": s == 2}
                        for s in seeds
                    ],
                    "compiled field": [{"seed": s, "error": "RuntimeError: no"} for s in seeds],
                    "plain torchdiffeq": [_run(s, 40.0, 0.9) for s in seeds],
                },
            },
            "ODE-Net (dopri5, adjoint)": {
                "target": 1.5,
                "variants": {
                    "eager": [_run(s, 100.0, 0.9) for s in seeds],
                    "compiled field": [_run(s, 80.0, 0.9) for s in seeds],
                },
            },
        },
    }
    summary = gpu_summary(record)
    rk = summary["RK-Net (rk4, direct)"]
    captured = rk["variants"]["captured"]
    # Speed-ups per seed 40/10, 41/10, 42/10; one seed fell back to the uncaptured loop.
    assert captured["speedups"] == pytest.approx([4.0, 4.1, 4.2])
    assert captured["errors"] == ["capture failed in 1, ran uncaptured"]
    assert captured["cells"]["median_ms"] == pytest.approx((10.0, 0.0))
    assert rk["best"][0] == "captured"
    assert rk["variants"]["compiled field"]["n"] == 0
    assert rk["variants"]["compiled field"]["errors"] == ["RuntimeError: no"]
    ode = summary["ODE-Net (dopri5, adjoint)"]
    assert ode["best"] == ("compiled field", pytest.approx([1.25, 1.25, 1.25]))


def _overhead_record(lightning: list[float] | None) -> dict[str, Any]:
    ms = {
        "plain": {"seconds": [4.0, 4.2, 3.8], "cpu_seconds": [4.0, 4.0, 4.0]},
        "odelab": {"seconds": [5.0, 4.8, 5.2], "cpu_seconds": [4.6, 4.8, 4.7]},
    }
    if lightning is not None:
        ms["lightning"] = {"seconds": lightning, "cpu_seconds": lightning}
    return {
        "steps": 200,
        "warmup": 30,
        "repeats": 3,
        "ms_per_step": ms,
        "max_weight_difference": 0.0,
    }


def test_overhead_rows_are_ratios_of_medians_with_their_spread() -> None:
    wall = overhead_rows(_overhead_record([4.6, 4.4, 4.5]))[0]
    # Medians: plain 4.0, Lightning 4.5, odelab 5.0; per repeat 4.6/4.0, 4.4/4.2, 4.5/3.8.
    assert wall["ms"] == pytest.approx({"plain": 4.0, "lightning": 4.5, "odelab": 5.0})
    assert wall["ratio"]["lightning/plain"] == pytest.approx((1.125, 4.4 / 4.2, 4.5 / 3.8))
    assert wall["ratio"]["odelab/plain"] == pytest.approx((1.25, 4.8 / 4.2, 5.2 / 3.8))
    assert wall["ratio"]["odelab/lightning"] == pytest.approx((5.0 / 4.5, 5.0 / 4.6, 5.2 / 4.5))
    # Records without the floor give only odelab / plain.
    old = overhead_rows(_overhead_record(None))[0]
    assert set(old["ratio"]) == {"odelab/plain"}


# Epochs of 2 batches: the timed steps cross epoch boundaries (the window sampler is
# reseeded every epoch; Lightning opens the floor's batches more than once per epoch).
SHORT_EPOCHS = ["data.batches_per_epoch=2", "data.n_points=60"]


def test_bare_lightning_floor_does_the_hand_written_loops_work(tmp_path: Path) -> None:
    cfg = overhead_config(0, 2, 5, tmp_path, SHORT_EPOCHS)
    plain = plain_steps(cfg, 2, 5)
    floor = lightning_steps(cfg, 2, 5)
    assert floor["seconds"] > 0 and floor["cpu_seconds"] > 0
    for a, b in zip(plain["params"], floor["params"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow  # six short training runs through odelab.train.run and Lightning
def test_overhead_measures_three_sides_doing_the_same_work(tmp_path: Path) -> None:
    args = argparse.Namespace(overhead_steps=5, warmup=2, repeats=2, overrides=SHORT_EPOCHS)
    record = overhead(args, tmp_path)
    assert set(record["ms_per_step"]) == {"plain", "lightning", "odelab"}
    for side in record["ms_per_step"].values():
        for clock in ("seconds", "cpu_seconds"):
            assert len(side[clock]) == 2 and all(v > 0 for v in side[clock])
    assert record["max_weight_difference"] == 0.0


# ---------------------------------------------------------------------------
# Per-step logging: values on logging steps only, epoch means from every step


class _Field(nn.Module):
    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return -y


class _Module:
    """What the callbacks touch on a LightningModule: `log` and `device`."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.logged: list[tuple[str, float, bool]] = []

    def log(self, key: str, value: float, on_step: bool = False, **_: Any) -> None:
        self.logged.append((key, value, on_step))


def test_nfe_monitor_logs_on_logging_steps_and_averages_every_step() -> None:
    blocks = [ODEBlock(_Field(), Solver(), Sensitivity()) for _ in range(2)]
    monitor = NFEMonitor()
    monitor._blocks = blocks
    module = _Module()
    connector = SimpleNamespace(should_update_logs=False)
    trainer = SimpleNamespace(fast_dev_run=False, _logger_connector=connector)
    forward = [3, 5, 7, 9, 11]
    for step, n in enumerate(forward):
        monitor.on_train_batch_start(trainer, module)
        blocks[0].func.count.forward, blocks[1].func.count.forward = n, 1
        blocks[0].func.count.backward = 2 * n
        connector.should_update_logs = step % 2 == 1  # steps 1 and 3 are logging steps
        monitor.on_train_batch_end(trainer, module)
        assert blocks[0].nfe_forward == 0  # reset for the next step
    steps = [(k, v) for k, v, on_step in module.logged if on_step]
    assert steps == [
        ("train/nfe_forward", 6.0),
        ("train/nfe_backward", 10.0),
        ("train/nfe_forward", 10.0),
        ("train/nfe_backward", 18.0),
    ]
    monitor.on_train_epoch_end(trainer, module)
    epoch = {k: v for k, v, on_step in module.logged if not on_step}
    assert epoch == {"train/nfe_forward_epoch": 8.0, "train/nfe_backward_epoch": 14.0}
    module.logged.clear()
    monitor.on_train_epoch_end(trainer, module)  # a new epoch without steps logs nothing
    assert module.logged == []


def test_step_timer_epoch_mean_covers_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 25.0])  # steps of 1, 3 and 5 s
    monkeypatch.setattr("odelab.callbacks.time.perf_counter", lambda: next(clock))
    timer = StepTimer()
    module = _Module()
    connector = SimpleNamespace(should_update_logs=False)
    trainer = SimpleNamespace(fast_dev_run=False, _logger_connector=connector)
    for step in range(3):
        connector.should_update_logs = step == 2
        timer.on_train_batch_start(trainer, module)
        timer.on_train_batch_end(trainer, module)
    timer.on_train_epoch_end(trainer, module)
    assert module.logged == [("train/step_time", 5.0, True), ("train/step_time_epoch", 3.0, False)]


# ---------------------------------------------------------------------------
# CUDA (pytest -m gpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_part_on_cuda_writes_well_formed_records(bench: ModuleType, tmp_path: Path) -> None:
    args = _gpu_args(bench, "cuda", tmp_path, "--gpu-seeds", "0")
    record = bench.gpu_steps(args)
    _check_record(record, [0])  # compiled variants included: they must not fail on CUDA
    assert record["device"]["type"] == "cuda"
    for model in gpu_summary(record).values():
        assert all(v["n"] == 1 and not v["errors"] for v in model["variants"].values())


@pytest.mark.parametrize(
    "fast",
    [
        {"compile_field": True},
        {"capture": True},
        {"capture": True, "compile_field": True},
    ],
    ids=["compiled", "captured", "captured+compiled"],
)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_solves_match_eager_torchdiffeq_on_cuda(fast: dict[str, bool]) -> None:
    from torchdiffeq import odeint

    torch.manual_seed(7)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).cuda()

    class Field(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, t: Tensor, y: Tensor) -> Tensor:
            return self.net(y) * (1.0 + t)

    fixed = {"rtol": None, "atol": None, "step_size": 0.1}
    block = ODEBlock(
        Field(copy.deepcopy(field)), Solver("rk4", **fixed, **fast), t=(0.0, 0.5, 1.0)
    ).cuda()
    reference = Field(field)
    t = torch.tensor([0.0, 0.5, 1.0], device="cuda")
    for _ in range(3):  # capture or compile on the first call, replay after
        y0 = torch.randn(8, 3, device="cuda", requires_grad=True)
        ours = block(y0)
        theirs = odeint(reference, y0, t, method="rk4", options={"step_size": 0.1})[-1]
        assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
        g_ours = torch.autograd.grad(ours.square().sum(), [y0, *block.parameters()])
        g_theirs = torch.autograd.grad(theirs.square().sum(), [y0, *reference.parameters()])
        for a, b in zip(g_ours, g_theirs, strict=True):
            assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()

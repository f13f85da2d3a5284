"""Speed of odelab's ODE core: host reads per training step, framework overhead, compiled
fields, and per-sample step control, all measured side by side in one process.

Parts (each a key of the JSON record written with --out):

1. `host_reads`: host reads of tensor values per training step, by the library that asks
   for them (`bench.host_reads.count_host_reads`), for the spiral, ODE-Net, RK-Net and CNF
   training steps on the default path (torchdiffeq) and on the fast paths (the sync-free
   fixed-grid loop of `solver.capture=true`, torchode). On the CPU a host read is a plain
   load; on CUDA each read of a device tensor is a device synchronisation.
2. `overhead`: the spiral step through odelab against a hand-written loop and against the
   same step in a bare LightningModule (the floor), `bench.overhead`: medians of the
   interleaved repeats with their spread.
3. `compile`: the vector field eager vs `solver.compile_field=true` (torch.compile) for the
   spiral MLP, the CNF and the ODE-Net, and the ODE-Net step against the plain
   torchdiffeq step of the same network: compile seconds and seconds per step.
4. `per_sample`: Van der Pol oscillators with per-sample stiffness mu in [0.1, 10] solved
   jointly (torchdiffeq: one step size for the batch) and per sample (torchode), and the
   latent ODE's irregular series (`data=periodic`): torchdiffeq solves on the union of the
   batch's times, torchode on each series' own. Steps, evaluations and seconds per solve.
5. `gpu` (on CUDA, or on the device `--gpu-device` names): ODE-Net (dopri5, adjoint) and
   RK-Net (rk4, direct) training steps at batch 128, eager vs compiled field, captured
   (RK-Net) and both, vs the plain torchdiffeq step of the same network; NFE per step and
   the held-out accuracy after a short training run (offline MNIST split), per seed.

Usage:
    python experiments/bench_speed.py --out DIR            # cpu budget, ~10 minutes loaded
    python experiments/bench_speed.py --out DIR --quick    # smoke run, ~3 minutes
    python experiments/bench_speed.py --out DIR --skip host_reads --skip overhead \
        --skip per_sample --skip compile --gpu-steps 150      # GPU part only (budget=gpu)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from bench.host_reads import SyncCount, count_host_reads
from bench.overhead import overhead
from odelab.harness import compose, run_quietly
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.ode.fast import torchode_solve
from odelab.profiling import describe_device
from odelab.systems import VanDerPol

# ---------------------------------------------------------------------------
# 1. Host reads per training step


class HostReadCounter(L.Callback):
    """Counts host reads during training steps `first` .. `first + steps - 1` (forward,
    backward, optimizer step and every hook between them)."""

    last: ClassVar[dict[str, Any]] = {}

    def __init__(self, first: int, steps: int):
        self.first, self.steps = first, steps
        self._context: Any = None
        self._count: SyncCount | None = None
        self.total = SyncCount()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.first <= trainer.global_step < self.first + self.steps:
            self._context = count_host_reads()
            self._count = self._context.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._context is None:
            return
        self._context.__exit__(None, None, None)
        for lib, n in self._count.by_library.items():
            for _ in range(n):
                self.total.add(lib)
        self._context = None
        HostReadCounter.last = {
            "steps": self.steps,
            "total": self.total.total,
            "by_library": dict(self.total.by_library),
        }


READ_CASES: dict[str, list[str]] = {
    "spiral (dopri5, direct)": ["experiment=spiral"],
    "spiral (torchode dopri5, direct)": ["experiment=spiral", "solver.backend=torchode"],
    "ODE-Net (dopri5, adjoint)": ["experiment=mnist_odenet"],
    "RK-Net (rk4, direct)": ["experiment=mnist_rknet"],
    "RK-Net (rk4, direct, capture loop)": ["experiment=mnist_rknet", "solver.capture=true"],
    "CNF (dopri5, direct)": ["experiment=cnf_toy"],
}
# Small sizes: the number of reads does not depend on them, the time does.
SHRINK = {
    "mnist": [
        "data.train_subset=256",
        "data.batch_size=16",
        "model.net.channels=16",
        "~callbacks.peak_memory",
    ],
    "cnf": ["data.batch_size=64", "data.batches_per_epoch=20"],
}


def host_reads(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    first, steps = 2, args.read_steps
    print(f"\n== 1. host reads per training step (steps {first}..{first + steps - 1})")
    out: dict[str, Any] = {"steps": steps, "cases": {}}
    for i, (name, overrides) in enumerate(READ_CASES.items()):
        shrink = (
            SHRINK["mnist"]
            if "mnist" in overrides[0]
            else (SHRINK["cnf"] if "cnf" in overrides[0] else [])
        )
        cfg = compose(
            [
                "trainer=cpu",
                *overrides,
                *shrink,
                "seed=0",
                f"trainer.max_steps={first + steps}",
                "trainer.limit_val_batches=0",
                "test=false",
                "+trainer.enable_checkpointing=false",
                "~callbacks.model_checkpoint",
                "~callbacks.save_figures",
                "~callbacks.on_exception_checkpoint",
                "+callbacks.host_reads._target_=__main__.HostReadCounter",
                f"+callbacks.host_reads.first={first}",
                f"+callbacks.host_reads.steps={steps}",
            ],
            workdir / f"reads_{i}",
            logger="none",
            log_dir=workdir / "logs",
        )
        HostReadCounter.last = {}
        run_quietly(cfg)
        record = dict(HostReadCounter.last)
        out["cases"][name] = record
        per_step = record["total"] / steps
        libs = ", ".join(f"{k} {v / steps:.1f}" for k, v in sorted(record["by_library"].items()))
        print(f"  {name:<38} {per_step:7.1f} reads/step   ({libs})", flush=True)
    return out


# ---------------------------------------------------------------------------
# 3. Compiled fields


def _time_steps(step: Callable[[], None], warmup: int, repeats: int) -> dict[str, Any]:
    """Seconds of `step()` per call (wall and process CPU), after `warmup` calls; the
    first call's wall time is kept apart (it holds compilation, if any)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        step()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {
        "first_call_s": first,
        "wall_s": wall,
        "cpu_s": cpu,
        "median_wall_s": statistics.median(wall),
        "median_cpu_s": statistics.median(cpu),
    }


class SpiralField(nn.Module):
    """The spiral experiment's field: MLP 2-50-2 with tanh on y^3."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y**3)


class PlainODE(nn.Module):
    """The ODE-Net's block as the torchdiffeq example writes it: odeint_adjoint on the field."""

    def __init__(self, field: nn.Module, rtol: float, atol: float):
        super().__init__()
        self.field, self.rtol, self.atol = field, rtol, atol
        self.register_buffer("t", torch.tensor([0.0, 1.0]))

    def forward(self, x: Tensor) -> Tensor:
        return odeint_adjoint(self.field, x, self.t, rtol=self.rtol, atol=self.atol)[1]


def _spiral_step(compiled: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    block = ODEBlock(
        SpiralField(),
        Solver("dopri5", compile_field=compiled),
        t=torch.linspace(0, 0.25, 10),
        return_trajectory=True,
    )
    y0 = torch.randn(20, 2)
    target = torch.randn(10, 20, 2)

    def step() -> None:
        loss = (block(y0) - target).abs().mean()
        loss.backward()

    return step


def _cnf_step(compiled: bool) -> Callable[[], None]:
    from odelab.models.cnf import CNF, TraceEstimator
    from odelab.models.time_fields import ConcatMLPField

    torch.manual_seed(0)
    field = ConcatMLPField(dim=2, hidden=64, depth=3, activation="tanh")
    cnf = CNF(
        field,
        Solver("dopri5", compile_field=compiled),
        Sensitivity("direct"),
        TraceEstimator("exact"),
    )
    x = torch.randn(256, 2)

    def step() -> None:
        loss = -cnf.log_prob(x).log_prob.mean()
        loss.backward()

    return step


def _odenet_step(variant: str, batch: int, channels: int) -> Callable[[], None]:
    from odelab.models.odenet import ODENet

    torch.manual_seed(0)
    solver = Solver("dopri5", compile_field=variant == "compiled")
    net = ODENet(solver, Sensitivity("adjoint"), channels=channels)
    if variant == "plain torchdiffeq":
        net.middle = PlainODE(net.block.field, 1e-3, 1e-3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def compiled(args: argparse.Namespace) -> dict[str, Any]:
    print("\n== 3. compiled fields (torch.compile) vs eager; seconds per training step")
    odenet_case = (
        f"ODE-Net (dopri5, adjoint, batch {args.odenet_batch}, {args.odenet_channels} channels)"
    )
    cases: dict[str, Callable[[str], Callable[[], None]]] = {
        "spiral MLP (dopri5, batch 20, 10 times)": lambda v: _spiral_step(v == "compiled"),
        "CNF 2D (dopri5, exact trace, batch 256)": lambda v: _cnf_step(v == "compiled"),
        odenet_case: lambda v: _odenet_step(v, args.odenet_batch, args.odenet_channels),
    }
    out: dict[str, Any] = {}
    for name, make in cases.items():
        variants = ["eager", "compiled"]
        if name.startswith("ODE-Net"):
            variants.append("plain torchdiffeq")
        out[name] = {}
        repeats = args.odenet_repeats if name.startswith("ODE-Net") else args.compile_repeats
        for variant in variants:
            try:
                result = _time_steps(make(variant), warmup=2, repeats=repeats)
            except Exception as err:  # noqa: BLE001 - a failed compile is a result too
                result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            out[name][variant] = result
            if "error" in result:
                print(f"  {name:<48} {variant:<18} failed: {result['error']}", flush=True)
            else:
                print(
                    f"  {name:<48} {variant:<18} first call {result['first_call_s']:7.1f} s   "
                    f"{1e3 * result['median_cpu_s']:8.1f} ms cpu/step   "
                    f"{1e3 * result['median_wall_s']:8.1f} ms wall/step",
                    flush=True,
                )
    return out


# ---------------------------------------------------------------------------
# 4. Per-sample step control


def _solve_timed(solve: Callable[[], Any], repeats: int) -> tuple[Any, list[float], list[float]]:
    result = solve()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        result = solve()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return result, wall, cpu


def van_der_pol(args: argparse.Namespace) -> dict[str, Any]:
    batch, t_end, tol = args.vdp_batch, 10.0, 1e-5
    mu = torch.logspace(-1, 1, batch)  # 0.1 .. 10
    y0 = torch.tensor([[2.0, 0.0]]).repeat(batch, 1)
    times = torch.linspace(0.0, t_end, 21)
    out: dict[str, Any] = {
        "batch": batch,
        "mu": [float(mu[0]), float(mu[-1])],
        "t_end": t_end,
        "rtol": tol,
        "atol": tol,
        "repeats": args.solve_repeats,
    }
    joint = ODEBlock(
        VanDerPol(mu), Solver("dopri5", rtol=tol, atol=tol), t=times, return_trajectory=True
    )
    per = ODEBlock(
        VanDerPol(mu),
        Solver("dopri5", rtol=tol, atol=tol, backend="torchode"),
        t=times,
        return_trajectory=True,
    )
    for name, block in (("joint (torchdiffeq)", joint), ("per-sample (torchode)", per)):

        def solve(block: ODEBlock = block) -> Tensor:
            block.reset_nfe()
            with torch.no_grad():
                return block(y0)

        result, wall, cpu = _solve_timed(solve, args.solve_repeats)
        entry: dict[str, Any] = {"nfe": block.nfe_forward, "wall_s": wall, "cpu_s": cpu}
        if block is per:
            steps = per.last_stats.n_steps.tolist()
            entry.update(
                steps_per_sample=steps,
                steps_mean=statistics.mean(steps),
                steps_max=max(steps),
                steps_min=min(steps),
            )
        else:
            entry["steps_all_samples"] = (block.nfe_forward - 2) / 6  # dopri5: FSAL, 6 per step
        out[name] = entry
        out[name + " solution"] = result
    diff = float(
        (out.pop("joint (torchdiffeq) solution") - out.pop("per-sample (torchode) solution"))
        .abs()
        .max()
    )
    out["max_abs_difference"] = diff
    return out


def irregular_grids(args: argparse.Namespace) -> dict[str, Any]:
    """The latent ODE's irregular series (`data=periodic`, one training batch): each series
    has its own observation times. torchdiffeq solves the batch on the union of their times
    (as `odelab.tasks.latent` does) and reads each series at its own; torchode solves each
    series on its own times. Same field (a latent-ODE-sized MLP), same initial states."""
    from odelab.data.periodic import PeriodicDataModule

    torch.manual_seed(0)
    data = PeriodicDataModule(seed=0, batch_size=args.grid_batch)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    target = batch.target  # (B, T) bool: every point a series has
    counts = target.sum(1)
    if not bool((counts == counts[0]).all()):
        return {"skipped": "series of one batch have different numbers of points"}
    n, points, dim = len(batch), int(counts[0]), 6  # latent_dim of conf/model/latent_ode.yaml
    columns = target.nonzero()[:, 1].reshape(n, points)  # each series' own columns
    own_times = batch.times[columns]  # (B, points)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, 32), nn.Tanh(), nn.Linear(32, dim))

        def forward(self, t: Tensor, y: Tensor) -> Tensor:
            return self.net(y)

    field = Field()
    y0 = torch.randn(n, dim)
    out: dict[str, Any] = {
        "batch": n,
        "points_per_sample": points,
        "union_points": int(batch.times.numel()),
        "t_end": float(batch.times[-1]),
        "rtol": 1e-5,
        "atol": 1e-5,
        "repeats": args.solve_repeats,
        "source": "data=periodic",
    }
    block = ODEBlock(
        field, Solver("dopri5", rtol=1e-5, atol=1e-5), t=batch.times, return_trajectory=True
    )

    def joint() -> Tensor:
        block.reset_nfe()
        with torch.no_grad():
            traj = block(y0)  # (union, B, dim)
        return traj[columns.T, torch.arange(n)]  # (points, B, dim)

    count = ODEBlock(
        copy.deepcopy(field), Solver("dopri5", rtol=1e-5, atol=1e-5, backend="torchode")
    ).func
    start = batch.times[:1]

    def per_sample() -> tuple[Tensor, Any]:
        count.reset()
        with torch.no_grad(), count.forward_pass(Solver("dopri5", backend="torchode")):
            return torchode_solve(
                count,
                y0,
                own_times,
                "dopri5",
                1e-5,
                1e-5,
                None,
                10_000,
                "dopri5",
                "field",
                t_start=start,
            )

    a, wall_a, cpu_a = _solve_timed(joint, args.solve_repeats)
    (b, stats), wall_b, cpu_b = _solve_timed(per_sample, args.solve_repeats)
    out["joint (torchdiffeq, union grid)"] = {
        "nfe": block.nfe_forward,
        "wall_s": wall_a,
        "cpu_s": cpu_a,
    }
    steps = stats.n_steps.tolist()
    out["per-sample (torchode, own grids)"] = {
        "nfe": count.nfe_forward,
        "wall_s": wall_b,
        "cpu_s": cpu_b,
        "steps_mean": statistics.mean(steps),
        "steps_max": max(steps),
    }
    out["max_abs_difference"] = float((a - b).abs().max())
    return out


def per_sample(args: argparse.Namespace) -> dict[str, Any]:
    print("\n== 4. per-sample step control: joint (torchdiffeq) vs per sample (torchode)")
    vdp = van_der_pol(args)
    for name in ("joint (torchdiffeq)", "per-sample (torchode)"):
        e = vdp[name]
        print(
            f"  Van der Pol  {name:<24} NFE {e['nfe']:5d}   "
            f"{1e3 * statistics.median(e['cpu_s']):8.1f} ms cpu/solve",
            flush=True,
        )
    grids = irregular_grids(args)
    for name in ("joint (torchdiffeq, union grid)", "per-sample (torchode, own grids)"):
        e = grids[name]
        print(
            f"  irregular    {name:<34} NFE {e['nfe']:5d}   "
            f"{1e3 * statistics.median(e['cpu_s']):8.1f} ms cpu/solve",
            flush=True,
        )
    return {"van_der_pol": vdp, "irregular_grids": grids}


# ---------------------------------------------------------------------------
# 5. GPU training steps: ODE-Net and RK-Net, eager vs each fast path


class _CountedCalls(nn.Module):
    """Counts a field's evaluations on the host (no device reads) for the plain step."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return self.field(t, z)


class PlainBlock(nn.Module):
    """The ODE block as torchdiffeq's examples write it (`odeint`, or `odeint_adjoint` for the
    adjoint) on the same field with the same solver settings: no odelab code in the solve."""

    def __init__(self, field: nn.Module, solver: Solver, sensitivity: Sensitivity):
        super().__init__()
        self.func = _CountedCalls(field)
        self.kwargs = solver.odeint_kwargs()
        self.adjoint = sensitivity.adjoint
        if self.adjoint:
            self.kwargs.update(sensitivity.odeint_adjoint_kwargs(solver))
        self.register_buffer("t", torch.tensor([0.0, 1.0]))
        self.forward_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(self.func, x, self.t, **self.kwargs)[1]
        self.forward_calls = self.func.calls  # the rest are the adjoint's, in backward()
        return out


# model -> (solver settings, sensitivity, speed-up target of the best fast path over eager,
# variants: name -> solver overrides, or None for the plain torchdiffeq step).
GPU_MODELS: dict[str, tuple[dict[str, Any], str, float, dict[str, dict[str, Any] | None]]] = {
    "ODE-Net (dopri5, adjoint)": (
        {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3},
        "adjoint",
        1.5,
        {
            "eager": {},
            "compiled field": {"compile_field": True},
            "plain torchdiffeq": None,
        },
    ),
    "RK-Net (rk4, direct)": (
        {"method": "rk4", "rtol": None, "atol": None, "step_size": 0.25},
        "direct",
        3.0,
        {
            "eager": {},
            "compiled field": {"compile_field": True},
            "captured": {"capture": True},
            "captured + compiled field": {"capture": True, "compile_field": True},
            "plain torchdiffeq": None,
        },
    ),
}


def gpu_data(
    roots: list[Path], device: torch.device, held_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """(train images, train labels, held-out images, held-out labels, description) on
    `device`: the offline MNIST split (`data=mnist_t10k`: train 7000, validation 1000) when
    its files are found, else random MNIST-shaped tensors (accuracy then means nothing)."""
    from odelab.data.images import ImageDataModule
    from odelab.errors import DataMissingError

    for root in roots:
        data = ImageDataModule(
            root=str(root), offline_test_split=True, val_size=1000, test_size=2000, seed=0
        )
        try:
            data.setup("fit")
        except DataMissingError:
            continue
        else:
            (xt, yt), (xv, yv) = data.splits["train"].tensors, data.splits["val"].tensors
            xv, yv = xv[:held_out], yv[:held_out]

            def images(x: Tensor) -> Tensor:
                return x.unsqueeze(1).float().div_(255.0).to(device)

            text = (
                f"MNIST offline split (data=mnist_t10k): {len(yt)} training images, "
                f"{len(yv)} held-out validation images"
            )
            return images(xt), yt.to(device), images(xv), yv.to(device), text
    gen = torch.Generator().manual_seed(0)
    n = 2048
    x = torch.rand(n + held_out, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (n + held_out,), generator=gen).to(device)
    text = "random MNIST-shaped tensors (no MNIST files found): accuracies are not meaningful"
    return x[:n], y[:n], x[n:], y[n:], text


def _gpu_net(
    settings: dict[str, Any], sensitivity: str, variant: dict[str, Any] | None, channels: int
) -> nn.Module:
    from odelab.models.odenet import ODENet

    solver = Solver(**settings, **(variant or {}))
    net = ODENet(solver, Sensitivity(sensitivity), channels=channels)
    if variant is None:  # the same field (same initial weights) in torchdiffeq's own loop
        net.middle = PlainBlock(net.block.field, Solver(**settings), Sensitivity(sensitivity))
    return net


def _nfe(net: nn.Module) -> tuple[int, int]:
    """Forward and backward evaluations since the last reset, read on the host."""
    middle = net.middle
    if isinstance(middle, PlainBlock):
        return middle.forward_calls, middle.func.calls - middle.forward_calls
    return middle.nfe_forward, middle.nfe_backward


def _reset_nfe(net: nn.Module) -> None:
    middle = net.middle
    if isinstance(middle, PlainBlock):
        middle.func.calls = middle.forward_calls = 0
    else:
        middle.reset_nfe()


def gpu_variant(
    model: str,
    variant: str,
    seed: int,
    data: tuple[Tensor, Tensor, Tensor, Tensor, str],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Train one variant for `args.gpu_steps` SGD steps at batch `args.gpu_batch` (same seed:
    same initial weights and batches for every variant), timing steps after
    `args.gpu_warmup` in blocks of `args.gpu_block` (one device synchronisation per block,
    so launches overlap as in training); then score the held-out images."""
    from odelab.profiling import wait_for_device

    settings, sensitivity, _, variants = GPU_MODELS[model]
    x_train, y_train, x_held, y_held, _ = data
    torch.manual_seed(seed)
    net = _gpu_net(settings, sensitivity, variants[variant], args.gpu_channels).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randint(len(y_train), (args.gpu_steps, args.gpu_batch), generator=gen)
    order = order.to(device)
    blocks: list[float] = []
    nfe_forward = nfe_backward = counted = 0
    net.train()
    start = time.perf_counter()
    warm_s = 0.0
    block_start = 0.0
    for step in range(args.gpu_steps):
        timed = step >= args.gpu_warmup
        if timed and (step - args.gpu_warmup) % args.gpu_block == 0:
            wait_for_device(device)
            block_start = time.perf_counter()
            if step == args.gpu_warmup:
                warm_s = block_start - start  # the first steps: compilation and capture
        _reset_nfe(net)
        idx = order[step]
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if timed:
            forward, backward = _nfe(net)
            nfe_forward, nfe_backward = nfe_forward + forward, nfe_backward + backward
            counted += 1
            if (step - args.gpu_warmup + 1) % args.gpu_block == 0:
                wait_for_device(device)
                blocks.append((time.perf_counter() - block_start) / args.gpu_block)
    wait_for_device(device)
    train_s = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y_held), 500):
            logits = net(x_held[i : i + 500])
            correct += int((logits.argmax(1) == y_held[i : i + 500]).sum())
    # The plain torchdiffeq block has no fast paths, so no fast-path state.
    fast_state = getattr(net.middle, "fast_state", {})
    return {
        "seed": seed,
        # Whether CUDA graphs were captured (solver.capture) or capture fell back.
        "graphs": len(fast_state.get("graphs", {})),
        "capture_failed": bool(fast_state.get("capture_failed")),
        "ms_per_step": [1e3 * b for b in blocks],
        "median_ms": 1e3 * statistics.median(blocks) if blocks else None,
        "nfe_forward": nfe_forward / max(counted, 1),
        "nfe_backward": nfe_backward / max(counted, 1),
        "warmup_s": warm_s,
        "train_s": train_s,
        "final_loss": float(loss.detach()),
        "accuracy": correct / len(y_held),
    }


def gpu_steps(args: argparse.Namespace) -> dict[str, Any]:
    """ODE-Net and RK-Net training steps on `args.gpu_device`, every variant side by side,
    seeds outermost (each seed's variants run back to back under the same conditions)."""
    import torch._dynamo.config

    # Every compiled variant shares ConvODEField.forward's compiled code; training and
    # evaluation shapes and grad modes add entries. Keep them all compiled (the default
    # limit of 8 would quietly fall back to eager in the later seeds).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    device = torch.device(args.gpu_device)
    print(
        f"\n== 5. training steps on {device}: batch {args.gpu_batch}, {args.gpu_channels} "
        f"channels, {args.gpu_steps} steps per variant and seed"
    )
    data = gpu_data(mnist_roots(args), device, args.gpu_held_out)
    print(f"  data: {data[4]}")
    models: dict[str, Any] = {}
    for model, (settings, sensitivity, target, variants) in GPU_MODELS.items():
        models[model] = {
            "solver": settings,
            "sensitivity": sensitivity,
            "target": target,
            "variants": {v: [] for v in variants},
        }
    for seed in args.gpu_seeds:
        for model, entry in models.items():
            for variant in entry["variants"]:
                try:
                    result = gpu_variant(model, variant, seed, data, args, device)
                except Exception as err:  # noqa: BLE001 - a failed fast path is a result too
                    first = str(err).splitlines()[0][:200] if str(err) else ""
                    result = {"seed": seed, "error": f"{type(err).__name__}: {first}"}
                entry["variants"][variant].append(result)
                if "error" in result:
                    print(f"  seed {seed}  {model:<26} {variant:<26} failed: {result['error']}")
                    continue
                print(
                    f"  seed {seed}  {model:<26} {variant:<26} {result['median_ms']:8.2f} ms/step"
                    f"   NFE {result['nfe_forward']:5.1f} + {result['nfe_backward']:5.1f}   "
                    f"acc {result['accuracy']:.3f}   first steps {result['warmup_s']:.1f} s",
                    flush=True,
                )
    return {
        "device": describe_device(device),
        "batch": args.gpu_batch,
        "channels": args.gpu_channels,
        "steps": args.gpu_steps,
        "warmup": args.gpu_warmup,
        "block": args.gpu_block,
        "seeds": list(args.gpu_seeds),
        "optimizer": "SGD lr 0.1, momentum 0.9, no augmentation",
        "data": data[4],
        "held_out": len(data[3]),
        "models": models,
    }


# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="write <out>/bench_speed.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer steps and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--read-steps", type=int, default=5, help="steps counted per case")
    parser.add_argument("--overhead-steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5, help="overhead repeats per side")
    parser.add_argument("--compile-repeats", type=int, default=10)
    parser.add_argument("--odenet-repeats", type=int, default=3)
    parser.add_argument("--odenet-batch", type=int, default=32)
    parser.add_argument("--odenet-channels", type=int, default=64)
    parser.add_argument("--vdp-batch", type=int, default=32)
    parser.add_argument("--grid-batch", type=int, default=25, help="latent ODE batch size")
    parser.add_argument("--solve-repeats", type=int, default=5)
    parser.add_argument(
        "--gpu-device",
        default="cuda",
        help="device of part 5 (runs when CUDA is present, or on any device named here)",
    )
    parser.add_argument("--gpu-steps", type=int, default=300, help="training steps per variant")
    parser.add_argument("--gpu-warmup", type=int, default=20, help="untimed first steps")
    parser.add_argument("--gpu-block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--gpu-channels", type=int, default=64)
    parser.add_argument("--gpu-held-out", type=int, default=1000, help="images scored")
    parser.add_argument("--gpu-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--mnist-root",
        type=Path,
        default=None,
        help="folder of the MNIST IDX files (default: the data=mnist_t10k config's root)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["host_reads", "overhead", "compile", "per_sample", "gpu"],
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.read_steps, args.overhead_steps, args.warmup, args.repeats = 2, 40, 10, 3
        args.compile_repeats, args.odenet_repeats, args.odenet_channels = 3, 1, 16
        args.vdp_batch, args.solve_repeats = 8, 2
        args.gpu_steps, args.gpu_warmup, args.gpu_seeds = 30, 10, [0]
    return args


def mnist_roots(args: argparse.Namespace) -> list[Path]:
    """Where part 5 looks for the offline MNIST files: `--mnist-root`, else the
    `data=mnist_t10k` config's folder (../shared/data/mnist) and copies inside the checkout
    (shared/data/mnist, data/mnist), which is what travels to a lent GPU machine."""
    if args.mnist_root is not None:
        return [args.mnist_root]
    from odelab.hydra_setup import repo_root

    root = repo_root()
    return [root.parent / "shared" / "data" / "mnist", root / "shared" / "data" / "mnist"] + [
        root / "data" / "mnist"
    ]


def runs_gpu_part(args: argparse.Namespace) -> bool:
    """Part 5 runs on CUDA when it is present, and on another device only when named."""
    if "gpu" in args.skip:
        return False
    return torch.device(args.gpu_device).type != "cuda" or torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record: dict[str, Any] = {
        "device": describe_device(torch.device("cpu")),
        "threads": args.threads,
        "settings": " ".join(sys.argv[1:]) or "(defaults)",
        "cuda": torch.cuda.is_available(),
        # The machine is shared: the report states the load the timings were taken under.
        "load_average": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        workdir = Path(tmp)
        if "host_reads" not in args.skip:
            record["host_reads"] = host_reads(args, workdir)
        if "overhead" not in args.skip:
            print("\n== 2. spiral overhead (bench.overhead)")
            record["overhead"] = overhead(args, workdir)
        if "per_sample" not in args.skip:
            record["per_sample"] = per_sample(args)
        if "compile" not in args.skip:
            record["compile"] = compiled(args)
        if runs_gpu_part(args):
            record["gpu"] = gpu_steps(args)
    record["wall_s"] = time.perf_counter() - start
    print(f"\nbench_speed: {record['wall_s']:.0f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            record,
            indent=1,
            default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o),
        )
        (args.out / "bench_speed.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

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
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint_adjoint

from bench.gpu_steps import gpu_steps
from bench.host_reads import host_reads
from bench.overhead import overhead
from bench.timing import time_call
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.ode.fast import torchode_solve
from odelab.profiling import describe_device
from odelab.systems import VanDerPol

# ---------------------------------------------------------------------------
# 3. Compiled fields


def _time_steps(step: Callable[[], None], warmup: int, repeats: int) -> dict[str, Any]:
    """Seconds of `step()` per call (wall and process CPU), after `warmup` calls (at least
    one); the first call's wall time is kept apart (it holds compilation, if any)."""
    t = time_call(step, warmup=max(1, warmup), repeats=repeats)
    return {
        "first_call_s": t.first_s,
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "median_wall_s": t.median_wall,
        "median_cpu_s": t.median_cpu,
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
    """The last solve's result and the wall and CPU seconds of `repeats` timed solves."""
    t = time_call(solve, warmup=1, repeats=repeats)
    return t.result, t.wall_s, t.cpu_s


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
    grids = irregular_grids(args)
    for label, part in (("Van der Pol", vdp), ("irregular", grids)):
        for name, e in part.items():
            if isinstance(e, dict) and "cpu_s" in e:
                print(
                    f"  {label:<12} {name:<34} NFE {e['nfe']:5d}   "
                    f"{1e3 * statistics.median(e['cpu_s']):8.1f} ms cpu/solve",
                    flush=True,
                )
    return {"van_der_pol": vdp, "irregular_grids": grids}


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

"""Spiral dynamics recovery: odelab against plain torch + torchdiffeq, side by side.

Two measurements, both taken in this one process so that they share the
machine's load:

1. Framework overhead: the spiral training step run through odelab (Hydra
   config -> `odelab.train.run` -> Lightning Trainer, DataModule, ODEBlock,
   NFEMonitor and StepTimer callbacks) against a hand-written loop doing the
   same work (same field and initial weights, same windows, solver, optimizer
   and schedule), and the floor: the same step in a bare LightningModule
   under a bare Trainer (no odelab code, no logging). Prints seconds per
   step and the ratios against the hand-written loop with their spread.
2. Recovery speed: the reference recipe of torchdiffeq's `ode_demo` (MLP
   2-50-2 tanh on y^3, RMSprop 1e-3, 20 windows of 10 steps, dopri5 at
   rtol=1e-7 atol=1e-9, 2000 iterations, noise-free data) written out as a
   baseline, against odelab's default spiral recipe given the baseline's
   measured wall time. Baseline and odelab runs alternate seed by seed.
   Prints both median errors (mean absolute error over the whole observed
   trajectory, solved from the true y0) and their ratio.

Usage:
    python experiments/bench_spiral.py            # full run, ~10+ minutes
    python experiments/bench_spiral.py --quick    # smoke run, ~1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from bench.overhead import compose_config, overhead
from odelab.harness import run_quietly
from odelab.profiling import describe_device

# ---------------------------------------------------------------------------
# 2. Recovery speed


class CubicSpiralField(nn.Module):
    """The true field of the reference: dy/dt = (y^3) A."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("A", torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return (y**3) @ self.A


class CubeMLP(nn.Module):
    """The reference's learned field: MLP 2-50-2 with tanh, applied to y^3."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
        for layer in (self.net[0], self.net[2]):
            nn.init.normal_(layer.weight, std=0.1)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y**3)


def baseline(seed: int, iterations: int) -> dict[str, float]:
    """The reference recipe (torchdiffeq ode_demo settings) as a plain loop."""
    torch.manual_seed(seed)
    n_points, window, batch = 1000, 10, 20
    t = torch.linspace(0.0, 25.0, n_points)
    y0 = torch.tensor([[2.0, 0.0]])
    with torch.no_grad():  # default tolerances: rtol=1e-7, atol=1e-9
        true = odeint(CubicSpiralField(), y0, t, method="dopri5")  # (N, 1, 2)
    field = CubeMLP()
    optimizer = torch.optim.RMSprop(field.parameters(), lr=1e-3)
    offsets = torch.arange(window)
    start = time.perf_counter()
    for _ in range(iterations):
        starts = torch.randint(n_points - window, (batch,))
        windows = true[starts[:, None] + offsets, 0].transpose(0, 1)  # (T, B, 2)
        pred = odeint(field, windows[0], t[:window], method="dopri5")
        loss = (pred - windows).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = odeint(field, y0, t, method="dopri5")
    return {"error": float((pred - true).abs().mean()), "seconds": seconds, "steps": iterations}


class StepCounter(L.Callback):
    """Records how many optimizer steps and how much training time a run got."""

    last: ClassVar[dict[str, float]] = {}

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        StepCounter.last = {
            "steps": trainer.global_step,
            "seconds": time.perf_counter() - self._start,
        }


def max_time(seconds: float) -> str:
    """Lightning's `max_time` string "DD:HH:MM:SS" (whole seconds, rounded)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def odelab_recovery(
    seed: int, budget_s: float, workdir: Path, extra: list[str]
) -> dict[str, float]:
    """odelab's default spiral recipe through `odelab.train.run`, stopped at `budget_s`."""
    cfg = compose_config(
        [
            "experiment=spiral",
            f"seed={seed}",
            f"+trainer.max_time={max_time(budget_s)}",
            "+callbacks.step_counter._target_=__main__.StepCounter",
            *extra,
        ],
        workdir / f"recovery_{seed}",
    )
    StepCounter.last = {}
    metrics = run_quietly(cfg)
    return {"error": metrics["test/traj_mae"], **StepCounter.last}


def recovery(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Print per-seed errors of both recipes; return them as a record."""
    print(
        f"\n== 2. recovery speed: reference recipe ({args.baseline_iters} iterations) vs odelab "
        f"in the same wall time, seeds {list(range(args.seeds))}"
    )
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "odelab": []}
    for seed in range(args.seeds):  # interleaved, so both sides see the same load
        base = baseline(seed, args.baseline_iters)
        results["baseline"].append(base)
        ours = odelab_recovery(seed, base["seconds"], workdir, args.odelab_override)
        results["odelab"].append(ours)
        for name, r in (("baseline", base), ("odelab", ours)):
            print(
                f"  seed {seed}  {name:<8} traj MAE {r['error']:.4f}  "
                f"train time {r['seconds']:6.1f} s  steps {int(r['steps'])}",
                flush=True,
            )
    med = {k: statistics.median(r["error"] for r in v) for k, v in results.items()}
    ratio = med["odelab"] / med["baseline"]
    budget = statistics.median(r["seconds"] for r in results["baseline"])
    print(f"  baseline median traj MAE {med['baseline']:.4f}  (median time {budget:.1f} s)")
    print(f"  odelab   median traj MAE {med['odelab']:.4f}  (same wall time per seed)")
    print(f"  ERROR RATIO odelab / baseline = {ratio:.3f}   (target <= 0.333)")
    runs = {side: [{"seed": seed, **r} for seed, r in enumerate(v)] for side, v in results.items()}
    return {"baseline_iterations": args.baseline_iters, "runs": runs}


# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, one seed")
    parser.add_argument("--seeds", type=int, default=3, help="recovery seeds per side")
    parser.add_argument("--baseline-iters", type=int, default=2000, help="reference iterations")
    parser.add_argument("--overhead-steps", type=int, default=400, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=3, help="overhead repeats per side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the measurements to <out>/bench_spiral.json (reports render it)",
    )
    parser.add_argument(
        "--odelab-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for odelab's recovery runs (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.baseline_iters = 1, 100
        args.overhead_steps, args.warmup, args.repeats = 50, 10, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print("odelab spiral benchmark")
    print(
        f"  machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(f"  settings: {' '.join(sys.argv[1:]) or '(defaults)'}")
    record: dict[str, Any] = {
        "device": describe_device(torch.device("cpu")),
        "threads": args.threads,
        "settings": " ".join(sys.argv[1:]) or "(defaults)",
    }
    with tempfile.TemporaryDirectory(prefix="bench_spiral_") as tmp:
        workdir = Path(tmp)
        if not args.skip_overhead:
            record["overhead"] = overhead(args, workdir)
        if not args.skip_recovery:
            record["recovery"] = recovery(args, workdir)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_spiral.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

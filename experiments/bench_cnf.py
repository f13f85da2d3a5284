"""Continuous normalizing flows: trace cost and regularized dynamics, side by side.

Two measurements, each taken side by side in one invocation so that its rows
share the machine's load:

1. Trace cost: one training step (forward, backward, update) of the same CNF
   (concat MLP 64x3, rk4 with 4 fixed steps, so the NFE is the same for both)
   on Gaussian data of dimension D in 2, 8, 32, 128, with the exact trace
   against Hutchinson's estimator. Prints seconds per step and exact / Hutchinson.
2. Regularized dynamics (RNODE): `experiment=cnf_toy` with and without the
   kinetic and Jacobian-norm regularizers (both weights `--weight`), on
   8gaussians and 2spirals, at dopri5 rtol = atol = `--tol` (1e-5 as in the
   papers, so that the NFE follows the dynamics rather than the step-size
   controller's floor). The two runs of a target are identical but for the
   weights (seed, steps, solver); the two targets train in parallel
   processes. Prints the test NLL of both and its difference, NFE per
   training step (last epoch, forward + backward), NFE per test solve of the
   trained models, and the unregularized / regularized NFE ratios.

Usage:
    python experiments/bench_cnf.py                     # both parts
    python experiments/bench_cnf.py --part trace        # only part 1 (~minutes)
    python experiments/bench_cnf.py --part regularizers --out logs/bench_cnf
    python experiments/bench_cnf.py --part regularizers --weight 0.1 --tol 1e-3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from odelab.harness import launch
from odelab.models.cnf import CNF, TraceEstimator
from odelab.models.time_fields import ConcatMLPField
from odelab.ode import Solver
from odelab.profiling import wait_for_device
from odelab.reports.cnf import nfe_per_step

DIMENSIONS = (2, 8, 32, 128)
TARGETS = ("8gaussians", "2spirals")


def time_training_step(
    dim: int, estimator: str, batch: int, repeats: int, device: torch.device
) -> float:
    """Median seconds of one training step of a CNF in `dim` dimensions."""
    torch.manual_seed(0)
    flow = CNF(
        ConcatMLPField(dim=dim, hidden=64, depth=3),
        Solver(method="rk4", rtol=None, atol=None, step_size=0.25),
        trace=TraceEstimator(estimator, noise="rademacher"),
    ).to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    x = torch.randn(batch, dim).to(device)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = -flow.log_prob(x).log_prob.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        wait_for_device(device)  # time the kernels, not their launch
        if i > 0:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def trace_cost(batch: int, repeats: int, device: torch.device) -> list[dict[str, float]]:
    rows = []
    print(f"\n(1) time per training step, exact vs Hutchinson trace (batch {batch}, rk4 x4 steps)")
    print(f"{'D':>5} {'exact s':>10} {'hutch s':>10} {'exact/hutch':>12}")
    for dim in DIMENSIONS:
        # Alternate the two so that a change in machine load hits both.
        exact = time_training_step(dim, "exact", batch, repeats, device)
        hutch = time_training_step(dim, "hutchinson", batch, repeats, device)
        rows.append({"dim": dim, "exact_s": exact, "hutchinson_s": hutch, "ratio": exact / hutch})
        print(f"{dim:>5} {exact:>10.4f} {hutch:>10.4f} {exact / hutch:>12.2f}", flush=True)
    growth_exact = rows[-1]["exact_s"] / rows[0]["exact_s"]
    growth_hutch = rows[-1]["hutchinson_s"] / rows[0]["hutchinson_s"]
    print(
        f"growth from D={DIMENSIONS[0]} to D={DIMENSIONS[-1]}: exact x{growth_exact:.1f}, "
        f"Hutchinson x{growth_hutch:.1f}"
    )
    return rows


def train_pair(
    target: str, out: str, weight: float, tol: float, extra: list[str]
) -> dict[str, float]:
    """The unregularized and the regularized run of one target, identical but for the weights."""
    torch.set_num_threads(1)
    result: dict[str, float | str] = {"target": target}
    for label, w in (("none", 0.0), ("reg", weight)):
        overrides = [
            "experiment=cnf_toy",
            f"data.name={target}",
            f"solver.rtol={tol}",
            f"solver.atol={tol}",
            f"model.kinetic_weight={w}",
            f"model.jacobian_weight={w}",
            *extra,
        ]
        launched = launch(overrides, Path(out) / f"{target}_{label}")
        metrics, seconds = launched.metrics, launched.seconds
        result.update(
            {
                f"nll_{label}": metrics["test/nll"],
                f"nfe_{label}": nfe_per_step(metrics),
                f"test_nfe_{label}": metrics["test/nfe_forward"],
                f"minutes_{label}": seconds / 60,
            }
        )
    result["nll_diff"] = result["nll_reg"] - result["nll_none"]
    result["nfe_ratio"] = result["nfe_none"] / result["nfe_reg"]
    result["test_nfe_ratio"] = result["test_nfe_none"] / result["test_nfe_reg"]
    return result


def regularizers(
    out: Path, weight: float, tol: float, extra: list[str], jobs: int
) -> list[dict[str, float]]:
    print(
        f"\n(2) RNODE regularizers (kinetic_weight = jacobian_weight = {weight}) vs none, "
        f"dopri5 rtol = atol = {tol}, {jobs} process(es)"
    )
    # One process per target: the two targets share the machine's load, and
    # within a target the two runs differ only in the regularizer weights.
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = [
            pool.submit(train_pair, target, str(out), weight, tol, extra) for target in TARGETS
        ]
        rows = [future.result() for future in futures]
    print(
        f"{'target':>11} {'NLL none':>9} {'NLL reg':>8} {'dNLL':>7} {'NFE none':>9} {'NFE reg':>8} "
        f"{'NFE ratio':>9} {'test NFE':>12} {'ratio':>6} {'min none':>9} {'min reg':>8}"
    )
    for r in rows:
        test_nfe = f"{r['test_nfe_none']:.0f}/{r['test_nfe_reg']:.0f}"
        print(
            f"{r['target']:>11} {r['nll_none']:>9.3f} {r['nll_reg']:>8.3f} {r['nll_diff']:>+7.3f} "
            f"{r['nfe_none']:>9.1f} {r['nfe_reg']:>8.1f} {r['nfe_ratio']:>9.2f} {test_nfe:>12} "
            f"{r['test_nfe_ratio']:>6.2f} {r['minutes_none']:>9.1f} {r['minutes_reg']:>8.1f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("all", "trace", "regularizers"), default="all")
    parser.add_argument("--out", type=Path, default=Path("logs/bench_cnf"))
    parser.add_argument("--batch", type=int, default=128, help="batch of the trace timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per trace setting")
    parser.add_argument("--weight", type=float, default=0.05, help="weight of both regularizers")
    parser.add_argument(
        "--tol", type=float, default=1e-5, help="dopri5 rtol = atol of the part-2 runs"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="part-2 targets trained in parallel processes"
    )
    parser.add_argument("--device", default="cpu", help="where part 1 runs (cpu, cuda)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for part 2")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; part 1 on {where}"
    )
    report: dict[str, object] = {}
    if args.part in ("all", "trace"):
        report["trace"] = trace_cost(args.batch, args.repeats, device)
        report["trace_device"] = where
    if args.part in ("all", "regularizers"):
        report["regularizers"] = regularizers(
            args.out, args.weight, args.tol, args.overrides, args.jobs
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_cnf_{args.part}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

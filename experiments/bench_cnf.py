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

3. Recipes (`--part recipes`): time to reach the FFJORD recipe's likelihood.
   On each target (8gaussians, 2spirals) `experiment=cnf_ffjord` and
   `experiment=cnf_fast` train at the same time in two processes (one torch
   thread each), so both see the machine's load. From each run's records:
   validation NLL after every epoch (dopri5 1e-5, exact trace, both recipes)
   against the cumulative training-step time. The threshold is the reference's
   final validation NLL + `--margin` (0.05 nats); each recipe's time to reach it
   is the training time at its first epoch at or below it; the speedup is the
   reference's time over the fast recipe's (and, as a second number, the
   reference's whole training time over the fast recipe's time to the
   threshold). Final test NLLs (10,000 points) of both are recorded beside it.
   Finished runs are reused (`resume=true`), so an interrupted benchmark
   continues where it stopped.
4. Seminorm on the same weights (`--part seminorm --runs DIR`): every
   finished CNF run under DIR (sweep folders, or a benchmark's run folders)
   that trained with an adaptive solver computes the training loss's gradient
   by the adjoint (at its solver's tolerances) on `--batches` test batches of
   its training batch size twice: the adjoint's error norm full, then the
   seminorm (Kidger et al. 2021). Same weights and batches, so the same
   forward solve and NLL: only the backward solve's step control differs.
   Records the backward NFE of both and the relative L2 distance between the
   two gradients (exactly 0 when the seminorm accepted the same steps).

Usage:
    python experiments/bench_cnf.py                     # parts 1 and 2
    python experiments/bench_cnf.py --part trace        # only part 1 (~minutes)
    python experiments/bench_cnf.py --part regularizers --out logs/bench_cnf
    python experiments/bench_cnf.py --part regularizers --weight 0.1 --tol 1e-3
    python experiments/bench_cnf.py --part recipes --out logs/bench_cnf  # hours on 2 CPU cores
    python experiments/bench_cnf.py --part seminorm --runs logs/reproduce/cnf/cpu_seminorm
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import platform
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.timing import time_call
from odelab.harness import launch
from odelab.models.cnf import CNF, TraceEstimator
from odelab.models.time_fields import ConcatMLPField
from odelab.ode import Solver
from odelab.profiling import describe_device, wait_for_device
from odelab.reports.base import relative_path
from odelab.reports.cnf import nfe_per_step
from odelab.runs import load_run

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

    def step() -> None:
        loss = -flow.log_prob(x).log_prob.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # The first step pays one-off allocation costs; the sync times the kernels, not their launch.
    sync = functools.partial(wait_for_device, device)
    return time_call(step, warmup=1, repeats=repeats, sync=sync).median_wall


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
        run_dir = Path(out) / f"{target}_{label}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a benchmark times fresh runs
        launched = launch(overrides, run_dir)
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


RECIPES = {"ffjord": "experiment=cnf_ffjord", "fast": "experiment=cnf_fast"}


def train_recipe(target: str, recipe: str, run_dir: str, extra: list[str]) -> dict[str, object]:
    """One recipe on one target (in its own process, one thread); its curve from the records."""
    torch.set_num_threads(1)
    overrides = [RECIPES[recipe], f"data.name={target}", "resume=true", *extra]
    launched = launch(overrides, Path(run_dir))
    return recipe_curve(Path(run_dir), launched.metrics, launched.seconds)


def recipe_curve(run_dir: Path, metrics: dict[str, float], seconds: float) -> dict[str, object]:
    """Validation NLL after each epoch against the cumulative training-step time."""
    run = load_run(run_dir)
    batches = int(OmegaConf.select(run.config, "data.batches_per_epoch"))
    _, step_times = run.series("train/step_time_epoch")
    _, val_nll = run.series("val/nll")
    _, nfe = run.series("train/nfe_forward_epoch")
    elapsed, curve = 0.0, []
    for epoch, (step_time, nll) in enumerate(zip(step_times, val_nll, strict=False)):
        elapsed += step_time * batches
        curve.append({"epoch": epoch + 1, "train_seconds": elapsed, "val_nll": nll})
    device = run_dir / "device.json"
    return {
        "run": relative_path(run_dir),
        "device": json.loads(device.read_text()) if device.is_file() else None,
        "steps": len(curve) * batches,
        "curve": curve,
        "test_nll": metrics["test/nll"],
        "test_nfe": metrics.get("test/nfe_forward"),
        "nfe_per_step": nfe_per_step(metrics),
        "nfe_per_step_mean": statistics.fmean(nfe) if nfe else None,
        "train_seconds": elapsed,
        "wall_seconds": seconds,
    }


def time_to(curve: list[dict[str, float]], threshold: float) -> float | None:
    """Training seconds at the first epoch whose validation NLL is at or below `threshold`."""
    return next((c["train_seconds"] for c in curve if c["val_nll"] <= threshold), None)


def compare_recipes(ffjord: dict, fast: dict, margin: float) -> dict[str, object]:
    threshold = ffjord["curve"][-1]["val_nll"] + margin
    t_ref, t_fast = time_to(ffjord["curve"], threshold), time_to(fast["curve"], threshold)
    return {
        "threshold_val_nll": threshold,
        "ffjord_seconds_to_threshold": t_ref,
        "fast_seconds_to_threshold": t_fast,
        "speedup": t_ref / t_fast if t_ref and t_fast else None,
        "speedup_vs_full_reference": ffjord["train_seconds"] / t_fast if t_fast else None,
        "test_nll_gap": fast["test_nll"] - ffjord["test_nll"],
    }


def recipes(
    out: Path, targets: list[str], margin: float, ffjord_extra: list[str], fast_extra: list[str]
) -> list[dict[str, object]]:
    print(f"\n(3) time to the FFJORD recipe's final NLL + {margin} nats, both recipes side by side")
    rows = []
    # A finished run is not trained again (resume=true), so its wall time is the one the
    # earlier invocation recorded, not this invocation's.
    earlier_file = out / "bench_cnf_recipes.json"
    earlier = (
        json.loads(earlier_file.read_text()).get("recipes", []) if earlier_file.is_file() else []
    )
    earlier_wall = {
        (row["target"], recipe): row[recipe].get("wall_seconds")
        for row in earlier
        for recipe in RECIPES
    }
    for target in targets:
        finished = {
            recipe: (out / f"{target}_{recipe}" / "metrics.json").is_file() for recipe in RECIPES
        }
        # Both recipes of a target at once: they share the machine's load.
        with ProcessPoolExecutor(
            max_workers=2, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = {
                recipe: pool.submit(
                    train_recipe,
                    target,
                    recipe,
                    str(out / f"{target}_{recipe}"),
                    ffjord_extra if recipe == "ffjord" else fast_extra,
                )
                for recipe in RECIPES
            }
            result = {recipe: future.result() for recipe, future in futures.items()}
        for recipe in RECIPES:
            if finished[recipe] and earlier_wall.get((target, recipe)) is not None:
                result[recipe]["wall_seconds"] = earlier_wall[target, recipe]
        row = {
            "target": target,
            **result,
            **compare_recipes(result["ffjord"], result["fast"], margin),
        }
        rows.append(row)
        speedup = row["speedup"]
        print(
            f"{target:>11}: threshold {row['threshold_val_nll']:.3f}; FFJORD "
            f"{row['ffjord_seconds_to_threshold'] or float('nan'):.0f} s, fast "
            f"{row['fast_seconds_to_threshold'] or float('nan'):.0f} s, speedup "
            f"{speedup if speedup is not None else float('nan'):.2f}; test NLL "
            f"{result['ffjord']['test_nll']:.3f} vs {result['fast']['test_nll']:.3f}",
            flush=True,
        )
    return rows


def seminorm_gradients(task: torch.nn.Module, x: torch.Tensor) -> dict[str, object]:
    """Backward NFE of one training gradient with the full adjoint norm, then the seminorm."""
    flow, result = task.flow.train(), {}
    base = flow.block.sensitivity
    adjoint = dataclasses.replace(base, method="adjoint")
    gradients = {}
    for name, seminorm in (("full", False), ("seminorm", True)):
        flow.block.sensitivity = dataclasses.replace(adjoint, seminorm=seminorm)
        flow.zero_grad(set_to_none=True)
        flow.block.reset_nfe()
        loss, nll, _ = task.training_loss(x)
        loss.backward()
        result[f"nfe_forward_{name}"] = flow.block.nfe_forward
        result[f"nfe_backward_{name}"] = flow.block.nfe_backward
        result[f"nll_{name}"] = float(nll.detach())
        gradients[name] = torch.cat(
            [p.grad.flatten() for p in flow.parameters() if p.grad is not None]
        )
    flow.block.sensitivity = base
    full = gradients["full"]
    result["grad_rel_diff"] = float((gradients["seminorm"] - full).norm() / full.norm())
    return result


def seminorm(runs: Path, batches: int) -> list[dict[str, object]]:
    """Part 4: the seminorm's backward NFE against the full norm's on trained weights."""
    print(f"\n(4) seminorm vs full adjoint norm on the same weights, {batches} test batches")
    rows = []
    for config in sorted(runs.glob("*/*/config.yaml")):
        run = load_run(config.parent)
        checkpoint = run.path / "checkpoints" / "last.ckpt"
        method = OmegaConf.select(run.config, "solver.method")
        if (
            OmegaConf.select(run.config, "model.flow._target_") != "odelab.models.cnf.CNF"
            or not Solver(method=method).adaptive
            or not (run.ok and checkpoint.is_file())
        ):
            continue
        torch.manual_seed(0)
        task = run.trained_task()
        data = instantiate(run.config.data)
        data.setup("test")
        size = int(run.config.data.batch_size)
        per_batch = [
            seminorm_gradients(task, data.test_set[i * size : (i + 1) * size])
            for i in range(batches)
        ]
        row = {
            "run": relative_path(run.path),
            "target": str(run.config.data.name),
            "seed": int(run.config.seed),
            "experiment": run.override_map.get("experiment", run.path.name),
            "trained_sensitivity": str(run.config.sensitivity.method),
            "trained_with_seminorm": bool(OmegaConf.select(run.config, "sensitivity.seminorm")),
            "kinetic_weight": float(OmegaConf.select(run.config, "model.kinetic_weight") or 0.0),
            "train_steps": run.train_steps,
            "batch_size": size,
            "batches": per_batch,
        }
        for key in per_batch[0]:
            row[key] = statistics.fmean(b[key] for b in per_batch)
        rows.append(row)
        print(
            f"{row['target']:>11} seed {row['seed']} ({row['experiment']}, "
            f"{row['train_steps']} steps): backward NFE "
            f"full {row['nfe_backward_full']:.1f}, seminorm {row['nfe_backward_seminorm']:.1f}; "
            f"gradient distance {row['grad_rel_diff']:.2e}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", choices=("all", "trace", "regularizers", "recipes", "seminorm"), default="all"
    )
    parser.add_argument(
        "--runs", type=Path, help="part 4: a folder of finished runs (dopri5-trained CNFs are used)"
    )
    parser.add_argument("--batches", type=int, default=10, help="part 4: test batches per run")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="part 3 targets")
    parser.add_argument(
        "--margin", type=float, default=0.05, help="part 3: nats above the reference's NLL"
    )
    parser.add_argument(
        "--ffjord", nargs="*", default=[], help="part 3: extra overrides of the reference runs"
    )
    parser.add_argument(
        "--fast", nargs="*", default=[], help="part 3: extra overrides of the fast-recipe runs"
    )
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
    if args.part == "recipes":
        report["recipes"] = recipes(args.out, args.targets, args.margin, args.ffjord, args.fast)
        report["margin"] = args.margin
    if args.part == "seminorm":
        if args.runs is None or not args.runs.is_dir():
            parser.error("--part seminorm needs --runs, a folder of finished CNF runs")
        report["seminorm"] = seminorm(args.runs, args.batches)
        report["seminorm_device"] = describe_device(torch.device("cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_cnf_{args.part}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""Gradient-masking checks on the trained models of a robustness budget (Yan et al. 2020).

For every finished run of the budget's sweeps (CNN, ODENet, TisODE; each data set,
training recipe and seed asked for) it loads `checkpoints/last.ckpt`, takes the first
`--images` test images (the same for every model: the budgets fix `data.seed`) and writes
one JSON record per run into `--out`:

- `grid`: FGSM and PGD accuracy on a fine epsilon grid (PGD must fall: `pgd_monotone`;
  FGSM is recorded as measured);
- `curve`: PGD accuracy against steps (10, 20, 50, 100) and restarts (1, 5) at the check
  epsilon (the grid point whose PGD accuracy is nearest half the clean accuracy) and one
  stated step size, each configuration with fresh random starts (`never_rises` can fail);
- `square`: the gradient-free Square attack at the check epsilon beside PGD and FGSM on the
  same images (`beats_gradient`: Square finds more than the best gradient attack);
- `solvers` (ODE nets): the net deployed with dopri5, attacked by PGD through dopri5,
  through fixed-step rk4 and Euler surrogates of the same weights, and by transfer from the
  CNN of the same data, recipe and seed; `min` is the robust accuracy to quote.

    python experiments/robust_checks.py --runs logs/reproduce/robust/cpu --out <bench dir>

A record that exists is kept, so an interrupted budget resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate

from odelab.attacks import (
    FGSM,
    PGD,
    Square,
    accuracy,
    attacked_accuracy,
    never_rises,
    pgd_curve,
    with_solver,
    worst_case,
)
from odelab.ode import Solver
from odelab.profiling import describe_device
from odelab.reports.base import relative_path
from odelab.runs import Run, load_run

MODELS = {"robust_cnn": "CNN", "robust_odenet": "ODENet", "tisode": "TisODE"}
# Epsilon grids on the [0, 1] scale: MNIST up to the study's largest PGD radius,
# Fashion-MNIST (far less robust) on a finer, smaller range.
GRIDS = {
    "mnist": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
    "fashion_mnist": [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1],
}
GRID_STEPS = 20  # PGD steps on the grid (step size 2.5 * eps / steps)
# A radius at which PGD must break (almost) every model: a far larger accuracy means the
# attack, not the model, failed.
LARGE_EPS = {"mnist": 0.5, "fashion_mnist": 0.3}
NEAR_ZERO = 0.05


RECIPES = {"GaussianNoise": "gaussian", "FGSM": "fgsm", "PGD": "pgd"}


def identify(run: Run) -> dict[str, str]:
    """Model, data set, recipe and seed of a run, from its config (the recipe from the
    `recipe=` override, else from the training perturbation's class)."""
    cfg = run.config
    perturbation = cfg.recipe.get("perturbation") if "recipe" in cfg else None
    derived = RECIPES.get(str(perturbation._target_).rsplit(".")[-1]) if perturbation else None
    return {
        "model": MODELS.get(str(cfg.task_name), str(cfg.task_name)),
        "experiment": str(cfg.task_name),
        "data": str(cfg.data.dataset),
        "recipe": run.override_map.get("recipe", derived or "clean"),
        "seed": str(cfg.seed),
    }


def record_name(ident: dict[str, str]) -> str:
    return f"checks_{ident['data']}_{ident['recipe']}_{ident['experiment']}_seed{ident['seed']}"


def load_net(run: Run, device: str = "cpu") -> torch.nn.Module:
    """The trained net of a run (the task's `net`), in eval mode on `device`."""
    return run.trained_task().net.eval().to(device)


def test_images(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = instantiate(run.config.data)
    data.setup("test")
    images, labels = data.splits["test"].tensors
    return images[:n].unsqueeze(1).float() / 255.0, labels[:n]


def check_eps(grid: list[float], pgd: list[float], clean: float) -> float:
    """The grid epsilon (> 0) whose PGD accuracy is nearest half the clean accuracy."""
    points = [(abs(a - clean / 2), e) for e, a in zip(grid, pgd, strict=True) if e > 0]
    return min(points)[1]


def checks(
    run: Run, cnn: Run | None, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, object]:
    """Every check for one run (see the module docstring)."""
    ident = identify(run)
    net = load_net(run, args.device)
    x, y = test_images(run, args.images)
    x, y = x.to(args.device), y.to(args.device)
    bs = args.batch_size
    clean = accuracy(net, x, y, bs)
    grid = GRIDS.get(ident["data"], GRIDS["mnist"])
    fgsm = [attacked_accuracy(net, FGSM(e), x, y, batch_size=bs) for e in grid]
    pgd = [attacked_accuracy(net, PGD(e, steps=GRID_STEPS), x, y, batch_size=bs) for e in grid]
    large = LARGE_EPS.get(ident["data"], 0.5)
    large_acc = attacked_accuracy(net, PGD(large, steps=GRID_STEPS), x, y, batch_size=bs)
    log("grid")
    eps = check_eps(grid, pgd, clean)
    step_size = eps / 8  # stated in the report; 100 steps cross the ball 12 times
    n_curve = min(args.curve_images, len(y))
    curve = pgd_curve(
        net, x[:n_curve], y[:n_curve], eps, step_size, args.curve_steps, args.curve_restarts, bs
    )
    log("curve")
    n_sq = min(args.square_images, len(y))
    xs, ys = x[:n_sq], y[:n_sq]
    square = {
        "eps": eps,
        "images": n_sq,
        "queries": args.queries,
        "acc": attacked_accuracy(net, Square(eps, queries=args.queries), xs, ys, batch_size=bs),
        "pgd_acc": attacked_accuracy(net, PGD(eps, steps=GRID_STEPS), xs, ys, batch_size=bs),
        "fgsm_acc": attacked_accuracy(net, FGSM(eps), xs, ys, batch_size=bs),
    }
    square["beats_gradient"] = square["acc"] < min(square["pgd_acc"], square["fgsm_acc"])
    log("square")
    record: dict[str, object] = {
        **ident,
        "run": relative_path(run.path),
        "images": len(y),
        "clean": clean,
        "grid": {
            "eps": grid,
            "fgsm": fgsm,
            "pgd": pgd,
            "pgd_steps": GRID_STEPS,
            "pgd_step_size": "2.5 * eps / steps",
            "pgd_monotone": all(b <= a for a, b in zip(pgd, pgd[1:], strict=False)),
            "eps0_is_clean": fgsm[0] == clean == pgd[0] if grid[0] == 0 else None,
        },
        "large_eps": {"eps": large, "pgd": large_acc, "near_zero": large_acc <= NEAR_ZERO},
        "curve": {
            "eps": eps,
            "step_size": step_size,
            "images": n_curve,
            "points": curve,
            "never_rises": never_rises(curve),
        },
        "square": square,
    }
    if hasattr(net, "block"):
        cnn_net = load_net(cnn, args.device) if cnn is not None else None
        record["solvers"] = solver_checks(net, cnn_net, x[:n_sq], y[:n_sq], eps, bs)
        log("solvers")
    return record


def solver_checks(
    net: torch.nn.Module,
    cnn: torch.nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    bs: int,
) -> dict[str, object]:
    """The net deployed with dopri5, attacked through dopri5, rk4, Euler and the CNN."""
    trained = net.block.solver
    step = trained.step_size or 0.1
    deployed = with_solver(net, Solver("dopri5", rtol=1e-3, atol=1e-3))
    sources = {
        "dopri5": deployed,
        "rk4": with_solver(net, Solver("rk4", None, None, step_size=step)),
        "euler": with_solver(net, Solver("euler", None, None, step_size=step)),
    }
    if cnn is not None:
        sources["transfer from CNN"] = cnn
    attack = PGD(eps, steps=GRID_STEPS)
    result = worst_case(deployed, sources, attack, x, y, bs)
    fgsm = worst_case(deployed, sources, FGSM(eps), x, y, bs)
    return {
        "deployed": "dopri5 (rtol=0.001, atol=0.001)",
        "trained_with": trained.describe(),
        "surrogate_step": step,
        "eps": eps,
        "attack": attack.describe(),
        "images": len(y),
        "clean_deployed": accuracy(deployed, x, y, bs),
        "clean_trained_solver": accuracy(net, x, y, bs),
        "accuracy": {k: v for k, v in result.items() if k != "min"},
        "min": result["min"],
        "fgsm_accuracy": {k: v for k, v in fgsm.items() if k != "min"},
        "fgsm_min": fgsm["min"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, required=True, help="the budget's sweeps folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON records")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds to check")
    parser.add_argument("--images", type=int, default=200, help="test images for grid/solvers")
    parser.add_argument("--curve-images", type=int, default=100)
    parser.add_argument("--curve-steps", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--curve-restarts", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--square-images", type=int, default=200)
    parser.add_argument("--queries", type=int, default=1000, help="Square attack queries")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    seeds = set(args.seeds.split(","))
    torch.manual_seed(0)
    runs = [load_run(p.parent) for p in sorted(args.runs.glob("*/*/metrics.json"))]
    runs = [r for r in runs if r.ok and r.config is not None and r.config.task_name in MODELS]
    by_key = {tuple(identify(r).values()): r for r in runs}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for run in runs:
        ident = identify(run)
        out = args.out / f"{record_name(ident)}.json"
        if ident["seed"] not in seeds or out.is_file():
            continue
        cnn = by_key.get(("CNN", "robust_cnn", ident["data"], ident["recipe"], ident["seed"]))
        label = record_name(ident)

        def log(stage: str, label: str = label) -> None:
            print(f"[{time.perf_counter() - start:7.0f} s] {label}: {stage}", flush=True)

        record = checks(run, cnn if cnn is not run else None, args, log)
        record["device"] = describe_device(torch.device(args.device))
        out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

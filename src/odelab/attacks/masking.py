"""The attack stages of the gradient-masking checks (`experiments/robust_checks.py`).

Each stage takes one trained net and its test images and returns the JSON-able part of the
check record it fills (schema: `odelab.records.robust.CheckRecord`):

- `grid_stage`: FGSM and PGD accuracy on a fine epsilon grid, and PGD at a large epsilon;
- `curve_stage`: PGD against steps and restarts at the check epsilon (`check_eps`);
- `square_stage`: the gradient-free Square attack beside PGD and FGSM on the same images;
- `independent_stage`: our FGSM and PGD beside the Adversarial Robustness Toolbox's;
- `solver_checks` (ODE nets): the net deployed with dopri5, attacked through dopri5, fixed-step
  surrogates of the same weights and the CNN.

`args` is the checks script's parsed command line (image counts, curve settings, queries,
batch size, device). Each stage is seeded by the caller (`STAGES.index(stage)`), so a record
resumed stage by stage equals one made in one go.
"""

from __future__ import annotations

import argparse

import torch
from scipy.stats import binomtest

from odelab.attacks.evaluate import (
    accuracy,
    attacked_accuracy,
    correct,
    never_rises,
    perturbed,
    pgd_curve,
    with_solver,
)
from odelab.attacks.gradient import FGSM, PGD
from odelab.attacks.square import Square
from odelab.errors import SolverError
from odelab.ode import Solver

STAGES = ("grid", "curve", "square", "solvers", "independent")
# Epsilon grids on the [0, 1] scale: MNIST up to the study's largest PGD radius,
# Fashion-MNIST (far less robust) on a finer, smaller range.
GRIDS = {
    "mnist": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
    "fashion_mnist": [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1],
    "svhn": [0.0, 1 / 255, 2 / 255, 3 / 255, 5 / 255, 8 / 255, 12 / 255],
}
GRID_STEPS = 20  # PGD steps on the grid (step size 2.5 * eps / steps)
# A radius at which PGD must break (almost) every model: a far larger accuracy means the
# attack, not the model, failed.
LARGE_EPS = {"mnist": 0.5, "fashion_mnist": 0.3, "svhn": 0.1}
NEAR_ZERO = 0.05


def check_eps(grid: list[float], pgd: list[float], clean: float) -> float:
    """The grid epsilon (> 0) whose PGD accuracy is nearest half the clean accuracy."""
    points = [(abs(a - clean / 2), e) for e, a in zip(grid, pgd, strict=True) if e > 0]
    return min(points)[1]


def grid_stage(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, data: str, bs: int
) -> dict[str, object]:
    clean = accuracy(net, x, y, bs)
    grid = GRIDS.get(data, GRIDS["mnist"])
    fgsm = [attacked_accuracy(net, FGSM(e), x, y, batch_size=bs) for e in grid]
    pgd = [attacked_accuracy(net, PGD(e, steps=GRID_STEPS), x, y, batch_size=bs) for e in grid]
    large = LARGE_EPS.get(data, 0.5)
    large_acc = attacked_accuracy(net, PGD(large, steps=GRID_STEPS), x, y, batch_size=bs)
    return {
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
    }


def curve_stage(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    record: dict[str, object],
    args: argparse.Namespace,
) -> dict[str, object]:
    grid = record["grid"]
    eps = check_eps(grid["eps"], grid["pgd"], float(record["clean"]))  # type: ignore[index]
    step_size = eps / 8  # stated in the report; 100 steps cross the ball 12 times
    n = min(args.curve_images, len(y))
    bs = args.batch_size
    points = pgd_curve(net, x[:n], y[:n], eps, step_size, args.curve_steps, args.curve_restarts, bs)
    return {
        "eps": eps,
        "step_size": step_size,
        "images": n,
        "points": points,
        "never_rises": never_rises(points),
    }


def square_stage(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    record: dict[str, object],
    args: argparse.Namespace,
) -> dict[str, object]:
    eps = float(record["curve"]["eps"])  # type: ignore[index]
    n = min(args.square_images, len(y))
    xs, ys, bs = x[:n], y[:n], args.batch_size
    square: dict[str, object] = {
        "eps": eps,
        "images": n,
        "queries": args.queries,
        "acc": attacked_accuracy(net, Square(eps, queries=args.queries), xs, ys, batch_size=bs),
        "pgd_acc": attacked_accuracy(net, PGD(eps, steps=GRID_STEPS), xs, ys, batch_size=bs),
        "fgsm_acc": attacked_accuracy(net, FGSM(eps), xs, ys, batch_size=bs),
    }
    # Square beats the gradient attacks only by enough images to be significant under any
    # pairing (exact sign test), not by one image.
    gap = round(n * (min(square["pgd_acc"], square["fgsm_acc"]) - square["acc"]))  # type: ignore[type-var,operator]
    square["beats_by_images"] = gap
    # (the sign test at its most favourable, every changed image a fix: `reports.stats.
    # resolvable`, restated here so that the attacks package does not import the reports)
    square["beats_gradient"] = gap > 0 and float(binomtest(gap, gap).pvalue) < 0.05
    return square


def independent_stage(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    record: dict[str, object],
    args: argparse.Namespace,
) -> dict[str, object]:
    """Our FGSM and PGD beside the Adversarial Robustness Toolbox's (ART, a maintained
    implementation and a dev dependency) on the Square images at the check epsilon.

    FGSM is deterministic: the same accuracy (`fgsm_same`). PGD without a random start must
    make the same images (`pgd_no_start_max_diff`, `pgd_no_start_pixels_differ`); with one
    random start each (the starts differ), ours must not be weaker: an exact McNemar test
    on the images where the two disagree (`pgd_weaker_p`; `pgd_as_strong` when >= 0.05).
    """
    try:
        import art
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return {
            "missing": "adversarial-robustness-toolbox is not installed: pip install -e '.[dev]'"
        }
    import numpy as np

    eps = float(record["curve"]["eps"])  # type: ignore[index]
    n = min(args.square_images, len(y))
    xs, ys, bs = x[:n], y[:n], args.batch_size
    step = 2.5 * eps / GRID_STEPS
    if str(args.device).startswith("cuda"):
        torch.cuda.set_device(torch.device(args.device))  # ART runs on the current device
    with torch.no_grad():
        classes = int(net(xs[:1]).shape[-1])
    classifier = PyTorchClassifier(
        net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(xs.shape[1:]),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if str(args.device).startswith("cuda") else "cpu",
    )
    x_np, y_np = xs.cpu().numpy(), ys.cpu().numpy()

    def theirs(attack: object) -> torch.Tensor:
        return torch.from_numpy(attack.generate(x_np, y=y_np)).to(xs.device)  # type: ignore[attr-defined]

    def art_pgd(random_init: int) -> torch.Tensor:
        return theirs(
            ProjectedGradientDescent(
                classifier, eps=eps, eps_step=step, max_iter=GRID_STEPS,
                num_random_init=random_init, batch_size=bs, verbose=False,
            )
        )  # fmt: skip

    fgsm = {
        "ours": attacked_accuracy(net, FGSM(eps), xs, ys, batch_size=bs),
        "art": accuracy(
            net, theirs(FastGradientMethod(classifier, eps=eps, batch_size=bs)), ys, bs
        ),
    }
    no_start = PGD(eps, step_size=step, steps=GRID_STEPS, random_start=False)
    ours_fixed = perturbed(net, no_start, xs, ys, bs)
    art_fixed = art_pgd(0)
    state = np.random.get_state()  # ART draws its random start from numpy's global RNG
    try:
        np.random.seed(STAGES.index("independent"))
        art_random = art_pgd(1)
    finally:
        np.random.set_state(state)
    ours_random = perturbed(net, PGD(eps, step_size=step, steps=GRID_STEPS), xs, ys, bs)
    ours_right = correct(net, ours_random, ys, bs)
    art_right = correct(net, art_random, ys, bs)
    pgd = {"ours": float(ours_right.float().mean()), "art": float(art_right.float().mean())}
    # Exact McNemar test on the images where the two disagree: is ours weaker (more images
    # left correct) than chance between two random starts allows?
    only_ours = int((ours_right & ~art_right).sum())
    only_art = int((art_right & ~ours_right).sum())
    p_weaker = (
        float(binomtest(only_ours, only_ours + only_art, alternative="greater").pvalue)
        if only_ours + only_art
        else 1.0
    )
    excess = only_ours - only_art
    return {
        "implementation": f"adversarial-robustness-toolbox {art.__version__}",
        "eps": eps,
        "images": n,
        "pgd_steps": GRID_STEPS,
        "pgd_step_size": step,
        "fgsm": fgsm,
        "fgsm_same": round(n * fgsm["ours"]) == round(n * fgsm["art"]),
        "pgd_no_start": {
            "ours": accuracy(net, ours_fixed, ys, bs),
            "art": accuracy(net, art_fixed, ys, bs),
        },
        "pgd_no_start_max_diff": float((ours_fixed - art_fixed).abs().max()),
        # A gradient component near zero can take the other sign in the other code's float
        # arithmetic: the share of pixel values that end more than 1e-5 apart.
        "pgd_no_start_pixels_differ": float(((ours_fixed - art_fixed).abs() > 1e-5).float().mean()),
        "pgd": pgd,
        "pgd_excess_images": excess,
        "pgd_disagree": {"only_ours_correct": only_ours, "only_art_correct": only_art},
        "pgd_weaker_p": p_weaker,
        "pgd_as_strong": p_weaker >= 0.05,
    }


def solver_checks(
    net: torch.nn.Module,
    cnn: torch.nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    bs: int,
    backend: str = "torchode",
) -> dict[str, object]:
    """The net deployed with dopri5, attacked through dopri5, rk4, Euler and the CNN.

    A source whose solve fails (step or NFE limit) is recorded with its error and left out
    of the minimum instead of stopping the budget.
    """
    trained = net.block.solver
    step = trained.step_size or 0.1
    deployed = with_solver(net, Solver("dopri5", rtol=1e-3, atol=1e-3, backend=backend))
    sources = {
        "dopri5": deployed,
        "rk4": with_solver(net, Solver("rk4", None, None, step_size=step)),
        "euler": with_solver(net, Solver("euler", None, None, step_size=step)),
    }
    if cnn is not None:
        sources["transfer from CNN"] = cnn
    attack = PGD(eps, steps=GRID_STEPS)
    accs: dict[str, dict[str, float]] = {"pgd": {}, "fgsm": {}}
    failed: dict[str, str] = {}
    for name, source in sources.items():
        for kind, made in (("pgd", attack), ("fgsm", FGSM(eps))):
            try:
                accs[kind][name] = attacked_accuracy(
                    deployed, made, x, y, source=source, batch_size=bs
                )
            except SolverError as err:
                failed[f"{kind} via {name}"] = str(err).splitlines()[0]
    pgd_min = min(accs["pgd"].values(), default=float("nan"))
    fgsm_min = min(accs["fgsm"].values(), default=float("nan"))
    return {
        "deployed": f"dopri5 (rtol=0.001, atol=0.001, {backend})",
        "error_norm": (
            "one RMS error over the whole batch (one step size per batch)"
            if backend == "torchdiffeq"
            else "per image (each image its own step size)"
        ),
        "trained_with": trained.describe(),
        "surrogate_step": step,
        "eps": eps,
        "attack": attack.describe(),
        "images": len(y),
        "clean_deployed": accuracy(deployed, x, y, bs),
        "clean_trained_solver": accuracy(net, x, y, bs),
        "accuracy": accs["pgd"],
        "min": pgd_min,
        "fgsm_accuracy": accs["fgsm"],
        "fgsm_min": fgsm_min,
        "worst": min((*accs["pgd"].values(), *accs["fgsm"].values()), default=float("nan")),
        "failed": failed,
        "transfer_source": cnn is not None,
    }

"""Accuracy under attack and the checks that robust accuracy is not gradient masking."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn

from odelab.attacks.base import Attack
from odelab.attacks.gradient import FGSM, PGD
from odelab.ode import ODEBlock, Solver


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> float:
    """Share of `x` that `model` classifies as `y`."""
    return int(correct(model, x, y, batch_size).sum()) / len(y)


def correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> Tensor:
    """Per image, whether `model` classifies it as `y`."""
    with torch.no_grad():
        return torch.cat(
            [
                model(xb).argmax(1) == yb
                for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=False)
            ]
        )


def attacked_accuracy(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    source: nn.Module | None = None,
    batch_size: int = 250,
) -> float:
    """Accuracy of `model` on `attack`'s examples, crafted against `source` (default: `model`).

    A different `source` gives a transfer attack (e.g. examples made on the CNN) or the
    same weights integrated with another solver.
    """
    attacked = perturbed(model if source is None else source, attack, x, y, batch_size)
    return accuracy(model, attacked, y, batch_size)


def perturbed(source: nn.Module, attack: Attack, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """`attack`'s examples of `x` against `source`, batch after batch."""
    return torch.cat(
        [
            attack(source, xb, yb)
            for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
        ]
    )


def with_solver(model: nn.Module, solver: Solver) -> nn.Module:
    """A copy of `model` whose ODE blocks integrate with `solver` (same weights).

    Tensors a module cached from its last forward pass with a graph attached (TisODE's
    steady-state penalty) are activations, not state: the copy starts without them.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Tensor) and value.grad_fn is not None:
                memo[id(value)] = None
    twin = copy.deepcopy(model, memo)
    for module in twin.modules():
        if isinstance(module, ODEBlock):
            module.solver = solver
            module.func.max_nfe = solver.max_nfe
    return twin


@dataclass
class Check:
    """One honesty check: what was measured and whether it passed."""

    name: str
    passed: bool
    detail: str


def honesty_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5),
    steps: int = 10,
    near_zero: float = 0.05,
    batch_size: int = 250,
) -> list[Check]:
    """Checks that fail when robust accuracy comes from masked gradients.

    1. epsilon = 0 gives the clean accuracy (FGSM and PGD).
    2. PGD accuracy does not rise along `eps_grid` and is at most `near_zero` at its end.
    3. PGD with more steps, and with more restarts (fresh starts), is never more accurate.
    """
    clean = accuracy(model, x, y, batch_size)
    fgsm0 = attacked_accuracy(model, FGSM(0.0), x, y, batch_size=batch_size)
    pgd0 = attacked_accuracy(model, PGD(0.0, steps=steps), x, y, batch_size=batch_size)
    checks = [
        Check(
            "eps=0 equals clean accuracy",
            fgsm0 == clean == pgd0,
            f"clean {clean:.3f}, FGSM(0) {fgsm0:.3f}, PGD(0) {pgd0:.3f}",
        )
    ]
    curve = [pgd0] + [
        attacked_accuracy(model, PGD(e, steps=steps), x, y, batch_size=batch_size)
        for e in eps_grid[1:]
    ]
    monotone = all(b <= a for a, b in pairwise(curve))
    text = ", ".join(f"{e:g}: {a:.3f}" for e, a in zip(eps_grid, curve, strict=False))
    checks.append(Check("PGD accuracy falls with eps", monotone, f"PGD-{steps} {text}"))
    checks.append(
        Check(
            f"near zero at eps={eps_grid[-1]:g}",
            curve[-1] <= near_zero,
            f"{curve[-1]:.3f} <= {near_zero}",
        )
    )
    eps = eps_grid[2] if len(eps_grid) > 2 else eps_grid[-1]
    # Fixed step size so that the longer runs take the same steps; fresh starts each.
    curve = pgd_curve(model, x, y, eps, 2.5 * eps / steps, (steps, 2 * steps), (1, 2), batch_size)
    checks.append(
        Check(
            f"more PGD steps/restarts never higher (eps={eps:g})",
            never_rises(curve),
            ", ".join(f"{p['steps']} steps x {p['restarts']}: {p['acc']:.3f}" for p in curve),
        )
    )
    return checks


def pgd_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step_size: float,
    steps: Sequence[int] = (10, 20, 50, 100),
    restarts: Sequence[int] = (1, 5),
    batch_size: int = 250,
    seed: int = 0,
) -> list[dict[str, float]]:
    """PGD accuracy for every (restarts, steps) at one eps and step size, fewest first.

    Each configuration draws its own random starts, and only final iterates count, so the
    curve measures whether a stronger attack finds more: it may rise (see `never_rises`).
    """
    return [
        {
            "steps": k,
            "restarts": r,
            "acc": attacked_accuracy(
                model, PGD(eps, step_size, k, restarts=r, seed=seed), x, y, batch_size=batch_size
            ),
        }
        for r in restarts
        for k in steps
    ]


def never_rises(curve: Sequence[dict[str, float]], tolerance: float = 0.0) -> bool:
    """True when no configuration with at least the steps and restarts of another is more
    accurate than it by more than `tolerance`."""
    return largest_rise(curve) <= tolerance


def largest_rise(curve: Sequence[dict[str, float]]) -> float:
    """The most by which a configuration with at least the steps and restarts of another is
    more accurate than it (0 when the curve never rises)."""
    return max(
        (
            b["acc"] - a["acc"]
            for a in curve
            for b in curve
            if b["steps"] >= a["steps"] and b["restarts"] >= a["restarts"]
        ),
        default=0.0,
    )


def worst_case(
    deployed: nn.Module,
    sources: dict[str, nn.Module],
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int = 250,
) -> dict[str, float]:
    """Accuracy of `deployed` on `attack`'s examples crafted against each source, and the
    minimum over them (`"min"`): the robust accuracy a masking-aware report quotes."""
    accs = {
        name: attacked_accuracy(deployed, attack, x, y, source=source, batch_size=batch_size)
        for name, source in sources.items()
    }
    return {**accs, "min": min(accs.values())}

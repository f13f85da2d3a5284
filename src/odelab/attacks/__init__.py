"""Input perturbations for robustness evaluation and training: noise, FGSM, PGD, Square.

Every attack is a callable `attack(model, x, y) -> x_perturbed` on pixels in [0, 1];
gradient attacks differentiate through the whole model, ODE solver included.
"""

from odelab.attacks.base import Attack, clip_to_ball
from odelab.attacks.evaluate import (
    Check,
    accuracy,
    attacked_accuracy,
    correct,
    honesty_checks,
    largest_rise,
    never_rises,
    perturbed,
    pgd_curve,
    with_solver,
    worst_case,
)
from odelab.attacks.gradient import FGSM, PGD
from odelab.attacks.noise import GaussianNoise
from odelab.attacks.registry import ATTACKS, attack_sweep, merge_sweeps
from odelab.attacks.square import Square

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "Attack",
    "Check",
    "GaussianNoise",
    "Square",
    "accuracy",
    "attack_sweep",
    "attacked_accuracy",
    "clip_to_ball",
    "correct",
    "honesty_checks",
    "largest_rise",
    "merge_sweeps",
    "never_rises",
    "perturbed",
    "pgd_curve",
    "with_solver",
    "worst_case",
]

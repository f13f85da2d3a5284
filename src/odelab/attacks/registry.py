"""The attack registry: configured kinds to attack classes, and sweeps of one kind.

It lives apart from `base` so that the attack modules import `base` and this module imports
them, with no import circle between the base class and its subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from odelab.attacks.base import Attack
from odelab.attacks.gradient import FGSM, PGD
from odelab.attacks.noise import GaussianNoise
from odelab.attacks.square import Square
from odelab.errors import ConfigError

ATTACKS: dict[str, type[Attack]] = {
    "gaussian": GaussianNoise,
    "fgsm": FGSM,
    "pgd": PGD,
    "square": Square,
}


def attack_sweep(kind: str, strengths: Sequence[float] = (), **params: Any) -> dict[str, Attack]:
    """One attack per strength, keyed by its name (e.g. `fgsm_0.3`); `kind: none` gives none.

    Args:
        kind: "none", "gaussian" (strength = sigma on the 0-255 scale), "fgsm" or
            "pgd" or "square" (strength = epsilon on the [0, 1] scale).
        strengths: the sweep; each strength becomes one evaluation row.
        params: further arguments of the attack class (PGD steps, step size, ...).
    """
    if kind == "none":
        return {}
    if kind not in ATTACKS:
        raise ConfigError(f"attack.kind={kind!r}; choose one of {['none', *ATTACKS]}")
    attacks = [ATTACKS[kind](float(s), **params) for s in strengths]
    return {a.name: a for a in attacks}


def merge_sweeps(sweeps: Sequence[dict[str, Attack]]) -> dict[str, Attack]:
    """Several attack sweeps as one (the study's table: noise, FGSM and PGD in one test run)."""
    merged: dict[str, Attack] = {}
    for sweep in sweeps:
        clash = merged.keys() & sweep.keys()
        if clash:
            raise ConfigError(
                f"attack names {sorted(clash)} appear in two sweeps; drop one from attack.sweeps"
            )
        merged.update(sweep)
    return merged

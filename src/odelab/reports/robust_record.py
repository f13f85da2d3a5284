"""The schema of one masking-check record (`experiments/robust_checks.py`, `checks_*.json`).

One record per checked model: the attacks of the check stages on its test images, written by
the checks script stage by stage and read by the robustness report, both through `load_check`
(`reports.records.load_record`), so a record with a missing, unknown or mistyped field fails
on load with one line naming the file and the field. Stages not yet run are absent (None);
`solvers` exists for ODE nets only, `retrained` for models trained again for the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odelab.attacks.masking import STAGES
from odelab.reports.records import load_record


@dataclass
class CheckSettings:
    """What the checks ran with; a record is reused only for the same settings and weights."""

    images: int
    curve_images: int
    curve_steps: list[int]
    curve_restarts: list[int]
    square_images: int
    queries: int
    batch_size: int
    deploy_backend: str
    weights: str  # SHA-256 of the checked weights
    cnn_weights: str | None  # those of the transfer source, for ODE nets
    metrics: str  # SHA-256 of the run's metrics.json (untimed keys)


@dataclass
class Grid:
    """FGSM and PGD accuracy on a fine epsilon grid (eps 0 first)."""

    eps: list[float]
    fgsm: list[float]
    pgd: list[float]
    pgd_steps: int
    pgd_step_size: str
    pgd_monotone: bool
    eps0_is_clean: bool | None


@dataclass
class LargeEps:
    """PGD at a radius where any honest attack breaks nearly every image."""

    eps: float
    pgd: float
    near_zero: bool


@dataclass
class CurvePoint:
    steps: int
    restarts: int
    acc: float


@dataclass
class Curve:
    """PGD accuracy against steps and restarts at one radius."""

    eps: float
    step_size: float
    images: int
    points: list[CurvePoint]
    never_rises: bool


@dataclass
class Square:
    """The gradient-free Square attack against FGSM and PGD at the same radius."""

    eps: float
    images: int
    queries: int
    acc: float
    pgd_acc: float
    fgsm_acc: float
    beats_by_images: int
    beats_gradient: bool


@dataclass
class Solvers:
    """The ODE net deployed with dopri5, attacked through dopri5, fixed-step solves and the CNN."""

    deployed: str
    error_norm: str
    trained_with: str
    surrogate_step: float
    eps: float
    attack: str
    images: int
    clean_deployed: float
    clean_trained_solver: float
    accuracy: dict[str, float]  # PGD accuracy of the deployed net, by attack source
    min: float
    fgsm_accuracy: dict[str, float]
    fgsm_min: float
    worst: float
    failed: dict[str, str]  # source -> first line of its solver error
    transfer_source: bool


@dataclass
class OursArt:
    ours: float
    art: float


@dataclass
class Disagree:
    only_ours_correct: int
    only_art_correct: int


@dataclass
class Independent:
    """Our FGSM and PGD against the adversarial-robustness-toolbox's on the same images."""

    implementation: str
    eps: float
    images: int
    pgd_steps: int
    pgd_step_size: float
    fgsm: OursArt
    fgsm_same: bool
    pgd_no_start: OursArt
    pgd_no_start_max_diff: float
    pgd_no_start_pixels_differ: float
    pgd: OursArt
    pgd_excess_images: int
    pgd_disagree: Disagree
    pgd_weaker_p: float
    pgd_as_strong: bool


@dataclass
class Missing:
    """A stage that could not run for want of a package (redone once it is installed)."""

    missing: str


@dataclass
class Retrained:
    """A model trained again for the checks, its metrics against the committed run's."""

    metrics_compared: int
    differing: dict[str, list[Any]]
    summary: str


@dataclass
class CheckRecord:
    """One checked model (`checks_<data>_<recipe>_<experiment>_seed<seed>.json`)."""

    model: str
    experiment: str
    data: str
    recipe: str
    seed: str
    run: str
    settings: CheckSettings
    images: int
    device: dict[str, Any]
    complete: bool = False
    clean: float | None = None
    grid: Grid | None = None
    large_eps: LargeEps | None = None
    curve: Curve | None = None
    square: Square | None = None
    solvers: Solvers | None = None
    independent: Independent | Missing | None = None
    retrained: Retrained | None = None


def load_check(path: str | Path, data: Any = None) -> CheckRecord:
    """The check record at `path` (or the parsed `data`), validated against `CheckRecord`."""
    return load_record(path, CheckRecord, data=data)


def stages_left(record: CheckRecord) -> list[str]:
    """The check stages the record has not run (`solvers` only for ODE nets)."""
    wanted = [s for s in STAGES if s != "solvers" or record.experiment != "robust_cnn"]
    return [
        s for s in wanted if getattr(record, s) is None or isinstance(getattr(record, s), Missing)
    ]

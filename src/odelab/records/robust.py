"""The masking-check records (`experiments/robust_checks.py`, `checks_*.json`). Stages not run
yet are None; `solvers` is for ODE nets only, `retrained` for models trained again for the
checks."""

from __future__ import annotations

from typing import Any

from odelab.records import schema

CheckSettings = schema(
    "CheckSettings",
    "What made a record, which is reused only for the same: "
    "settings, weights (SHA-256 of the tensors; `cnn_weights` the transfer source's) and run "
    "(`metrics`: SHA-256 of its untimed metrics).",
    images=int,
    curve_images=int,
    curve_steps=list[int],
    curve_restarts=list[int],
    square_images=int,
    queries=int,
    batch_size=int,
    deploy_backend=str,
    weights=str,
    cnn_weights=str | None,
    metrics=str,
)
Grid = schema(
    "Grid",
    "FGSM and PGD accuracy on a fine epsilon grid (eps 0 first).",
    eps=list[float],
    fgsm=list[float],
    pgd=list[float],
    pgd_steps=int,
    pgd_step_size=str,
    pgd_monotone=bool,
    eps0_is_clean=bool | None,
)
LargeEps = schema(
    "LargeEps",
    "PGD at a radius where any honest attack breaks nearly every image.",
    eps=float,
    pgd=float,
    near_zero=bool,
)
CurvePoint = schema("CurvePoint", "PGD at one setting.", steps=int, restarts=int, acc=float)
Curve = schema(
    "Curve",
    "PGD accuracy against steps and restarts at one radius.",
    eps=float,
    step_size=float,
    images=int,
    points=list[CurvePoint],
    never_rises=bool,
)
Square = schema(
    "Square",
    "The gradient-free Square attack beside FGSM and PGD, same radius.",
    eps=float,
    images=int,
    queries=int,
    acc=float,
    pgd_acc=float,
    fgsm_acc=float,
    beats_by_images=int,
    beats_gradient=bool,
)
Solvers = schema(
    "Solvers",
    "The ODE net deployed with dopri5, attacked through dopri5, "
    "fixed-step solves and the CNN: PGD (`accuracy`) and FGSM accuracy and errors by source.",
    deployed=str,
    error_norm=str,
    trained_with=str,
    surrogate_step=float,
    eps=float,
    attack=str,
    images=int,
    clean_deployed=float,
    clean_trained_solver=float,
    accuracy=dict[str, float],
    min=float,
    fgsm_accuracy=dict[str, float],
    fgsm_min=float,
    worst=float,
    failed=dict[str, str],
    transfer_source=bool,
)
OursArt = schema("OursArt", "Our accuracy and ART's.", ours=float, art=float)
Disagree = schema(
    "Disagree",
    "Images only one implementation gets right.",
    only_ours_correct=int,
    only_art_correct=int,
)
Independent = schema(
    "Independent",
    "Our FGSM and PGD against adversarial-robustness-toolbox's.",
    implementation=str,
    eps=float,
    images=int,
    pgd_steps=int,
    pgd_step_size=float,
    fgsm=OursArt,
    fgsm_same=bool,
    pgd_no_start=OursArt,
    pgd_no_start_max_diff=float,
    pgd_no_start_pixels_differ=float,
    pgd=OursArt,
    pgd_excess_images=int,
    pgd_disagree=Disagree,
    pgd_weaker_p=float,
    pgd_as_strong=bool,
)
Missing = schema(
    "Missing", "A stage not run for want of a package (redone once installed).", missing=str
)
Retrained = schema(
    "Retrained",
    "A model trained again for the checks, its metrics beside the old.",
    metrics_compared=int,
    differing=dict[str, list[Any]],
    summary=str,
)
CheckRecord = schema(
    "CheckRecord",
    "One checked model (`checks_<data>_<recipe>_<experiment>_seed<seed>.json`).",
    model=str,
    experiment=str,
    data=str,
    recipe=str,
    seed=str,
    run=str,
    settings=CheckSettings,
    images=int,
    device=dict[str, Any],
    complete=(bool, False),
    clean=(float | None, None),
    grid=(Grid | None, None),
    large_eps=(LargeEps | None, None),
    curve=(Curve | None, None),
    square=(Square | None, None),
    solvers=(Solvers | None, None),
    independent=(Independent | Missing | None, None),
    retrained=(Retrained | None, None),
)

"""The records of `experiments/bench_cnf.py`: `bench/bench_cnf_recipes.json` (`--part recipes`)
and `bench/bench_cnf_seminorm.json` (`--part seminorm`)."""

from __future__ import annotations

from dataclasses import field

from odelab.records import schema

CurvePoint = schema(
    "CurvePoint",
    "One validation of a recipe's run.",
    epoch=int,
    train_seconds=float,
    val_nll=float,
)
RecipeRun = schema(
    "RecipeRun",
    "One recipe on one target.",
    (str, "run"),
    (dict, "device"),
    (int, "steps"),
    (list[CurvePoint], "curve"),
    (float, "test_nll test_nfe nfe_per_step nfe_per_step_mean train_seconds wall_seconds"),
)
Recipe = schema(
    "Recipe",
    "Both recipes on one target: training seconds to the threshold, their ratio.",
    (str, "target"),
    (RecipeRun, "ffjord fast"),
    (float, "threshold_val_nll test_nll_gap"),
    (float | None, "speedup speedup_vs_full_reference", None),
    (float | None, "ffjord_seconds_to_threshold fast_seconds_to_threshold", None),
)
RecipesRecord = schema(
    "RecipesRecord", "`bench/bench_cnf_recipes.json`.", recipes=list[Recipe], margin=(float, 0.05)
)
SeminormRun = schema(
    "SeminormRun",
    "Both adjoint norms on one flow.",
    (str, "run target"),
    (int, "seed"),
    (str, "experiment trained_sensitivity"),
    (bool, "trained_with_seminorm"),
    (float, "kinetic_weight"),
    (int, "train_steps batch_size"),
    (list[dict], "batches"),
    (float, "nfe_forward_full nfe_backward_full nll_full"),
    (float, "nfe_forward_seminorm nfe_backward_seminorm nll_seminorm"),
    (float, "grad_rel_diff"),
)
SeminormRecord = schema(
    "SeminormRecord",
    "`bench/bench_cnf_seminorm.json`.",
    seminorm=list[SeminormRun],
    seminorm_device=(dict, field(default_factory=dict)),
)

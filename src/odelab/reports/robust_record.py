"""The masking-check records (`experiments/robust_checks.py`, `checks_*.json`): their schema,
read and written through `load_check` (a missing, unknown or mistyped field fails on load naming
the file and field), and for the robustness report one row per record and the two checks.yaml
claims they test. Stages not run yet are None; `solvers` is for ODE nets only, `retrained` for
models trained again for the checks."""

from __future__ import annotations

from dataclasses import asdict, field, make_dataclass
from pathlib import Path
from typing import Any

from odelab.attacks.evaluate import largest_rise
from odelab.attacks.masking import STAGES
from odelab.reports.base import Jobs, conf_budgets, records_dir
from odelab.reports.claims import Verdict, evaluate, load_claims
from odelab.reports.records import load_record

MODELS = {"robust_cnn": "CNN", "robust_odenet": "ODENet", "tisode": "TisODE"}
DATA = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "svhn": "SVHN"}
MASKING_LABELS = {  # the two claims of conf/claims/checks.yaml the masking checks test
    "huang_no_gradient_masking": "PGD via dopri5 vs via fixed step (ODE nets)",
    "ott_finer_solver": "clean accuracy, dopri5 vs the training solver (ODE nets)",
}


def schema(name: str, doc: str, **fields: Any) -> type:
    """A record dataclass: `fields` maps each name, in order, to its type or (type, default)."""
    spec = [
        (k, t[0], field(default=t[1])) if isinstance(t, tuple) else (k, t)
        for k, t in fields.items()
    ]
    return make_dataclass(name, spec, namespace={"__doc__": doc, "__module__": __name__})


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


def load_check(path: str | Path, data: Any = None) -> Any:
    """The check record at `path` (or the parsed `data`) as a `CheckRecord`."""
    return load_record(path, CheckRecord, data=data)


def stage_done(result: Any) -> bool:
    """Whether a stage's result is there: one that lacked its package (`Missing`, or
    `{"missing": ...}` in a record not loaded) is redone."""
    if isinstance(result, dict):
        return "missing" not in result
    return result is not None and not isinstance(result, Missing)


def stages_left(record: Any) -> list[str]:
    """The check stages the record has not run (`solvers` only for ODE nets)."""
    wanted = [s for s in STAGES if s != "solvers" or record.experiment != "robust_cnn"]
    return [s for s in wanted if not stage_done(getattr(record, s))]


def check_rows(jobs: Jobs, budget: str, reports: Path, report_dir: Path) -> list[dict[str, Any]]:
    """One row per check record: the budget's own, then those of the part budgets whose sweeps
    all belong to this one (as the combined `cpu` reads its chunks'), by name."""
    bench, budgets = report_dir / "records" / "bench", conf_budgets("robust")[0]
    found = {k: (bench / f"{k}.json", v) for k, v in jobs.bench.items() if k.startswith("checks_")}
    for part, sweeps in budgets.items():
        if part != budget and sweeps and all(s in budgets.get(budget, []) for s in sweeps):
            for path in sorted(records_dir("robust", part, reports).glob("bench/checks_*.json")):
                found.setdefault(path.stem, (path, None))
    rows = []
    for path, data in (found[k] for k in sorted(found)):
        r = load_check(path, data=data)
        s, via = r.solvers, r.solvers.accuracy if r.solvers else {}
        rise = r.curve and round(largest_rise([asdict(p) for p in r.curve.points]) * r.curve.images)
        rows.append(
            {
                "record": r,
                "data": DATA.get(r.data.split("_")[0], r.data),
                "rise": rise,
                "left": stages_left(r),
                "dopri5": via.get("dopri5"),
                "fixed": min((via[k] for k in ("rk4", "euler") if k in via), default=None),
                "transfer": via.get("transfer from CNN"),
                "deployed": s and s.clean_deployed,
                "trained": s and s.clean_trained_solver,
            }
        )
    return rows


def check_verdicts(rows: list[dict[str, Any]]) -> list[Verdict]:
    """The two checks.yaml claims the masking checks test, over the checked ODE nets (in %)."""
    ode = [row for row in rows if row["record"].solvers is not None]
    if not ode:
        return []
    pct = {k: [100 * row[k] for row in ode] for k in ("dopri5", "fixed", "deployed", "trained")}
    claims = load_claims("checks")
    return [
        evaluate(claims["huang_no_gradient_masking"], pct["dopri5"], pct["fixed"]),
        evaluate(claims["ott_finer_solver"], pct["deployed"], pct["trained"]),
    ]

"""The masking-check records (`experiments/robust_checks.py`, `checks_*.json`; their schema
`odelab.records.robust.CheckRecord`): read and written through `load_check` (a missing, unknown
or mistyped field fails on load naming the file and field), and for the robustness report one
row per record and the two checks.yaml claims they test."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from odelab.attacks.evaluate import largest_rise
from odelab.attacks.masking import STAGES
from odelab.records.robust import CheckRecord, Missing
from odelab.reports.base import Jobs, conf_budgets, records_dir
from odelab.reports.claims import Verdict, evaluate, load_claims
from odelab.reports.records import load_record

MODELS = {  # arm (the experiment, or the `model=` override of the authors' 2 x 2) -> name
    "robust_cnn": "CNN",
    "robust_odenet": "ODENet",
    "tisode": "TisODE",
    "robust_cnn_authors": "CNN (authors')",
    "robust_odenet_authors": "ODENet (authors')",
}
DATA = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "svhn": "SVHN"}
MASKING_LABELS = {  # the two claims of conf/claims/checks.yaml the masking checks test
    "huang_no_gradient_masking": "PGD via dopri5 vs via fixed step (ODE nets)",
    "ott_finer_solver": "clean accuracy, dopri5 vs the training solver (ODE nets)",
}


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

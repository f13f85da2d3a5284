"""The robustness report's masking-check rows and the two checks.yaml claims they test.

Each record (`experiments/robust_checks.py`) is validated against `robust_record.CheckRecord`
on load. A combined budget reads its parts' records in place rather than storing copies.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from odelab.attacks.evaluate import largest_rise
from odelab.reports.base import Jobs, records_dir
from odelab.reports.claims import Verdict, evaluate, load_claims
from odelab.reports.robust_record import load_check, stages_left

DATA = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "svhn": "SVHN"}
MASKING_LABELS = {
    "huang_no_gradient_masking": "PGD via dopri5 vs via fixed step (ODE nets)",
    "ott_finer_solver": "clean accuracy, dopri5 vs the training solver (ODE nets)",
}


def check_records(
    jobs: Jobs, budgets: dict[str, list[list[str]]], budget: str, reports: Path
) -> dict[str, Path | dict]:
    """The masking-check records by name: the budget's own, then (read in place) those of the
    part budgets whose sweeps all belong to this one, as the combined `cpu` reads its chunks'."""
    found: dict[str, Path | dict] = {k: v for k, v in jobs.bench.items() if k.startswith("checks_")}
    mine = budgets.get(budget, [])
    for part, sweeps in budgets.items():
        if part == budget or not sweeps or not all(s in mine for s in sweeps):
            continue
        for path in sorted((records_dir("robust", part, reports) / "bench").glob("*.json")):
            found.setdefault(path.stem, path) if path.stem.startswith("checks_") else None
    return dict(sorted(found.items()))


def check_rows(records: dict[str, Path | dict], report_dir: Path) -> list[dict[str, Any]]:
    """One row per masking-check record (validated on load)."""
    rows = []
    for name, source in records.items():
        if isinstance(source, Path):
            r = load_check(source)
        else:
            r = load_check(report_dir / "records" / "bench" / f"{name}.json", data=source)
        via = r.solvers.accuracy if r.solvers else {}
        fixed = [v for k, v in via.items() if k in ("rk4", "euler")]
        rows.append({
            "who": f"{DATA.get(r.data.split('_')[0], r.data)} {r.recipe} {r.model} seed {r.seed}",
            "record": r, "left": stages_left(r), "dopri5": via.get("dopri5"),
            "fixed": min(fixed) if fixed else None, "transfer": via.get("transfer from CNN"),
            "rise": round(largest_rise([asdict(p) for p in r.curve.points]) * r.curve.images)
            if r.curve else None,
        })  # fmt: skip
    return rows


def check_verdicts(rows: list[dict[str, Any]]) -> list[Verdict]:
    """The two checks.yaml claims the masking checks test, over the checked ODE nets."""
    claims = load_claims("checks")
    ode = [r["record"] for r in rows if r["record"].solvers is not None]
    if not ode:
        return []
    adaptive = [100 * r.solvers.accuracy["dopri5"] for r in ode]
    fixed = [100 * min(r.solvers.accuracy[k] for k in ("rk4", "euler")) for r in ode]
    finer = [100 * r.solvers.clean_deployed for r in ode]
    trained = [100 * r.solvers.clean_trained_solver for r in ode]
    return [
        evaluate(claims["huang_no_gradient_masking"], adaptive, fixed),
        evaluate(claims["ott_finer_solver"], finer, trained),
    ]

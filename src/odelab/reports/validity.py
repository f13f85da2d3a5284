"""Is it an ODE? (Ott et al., ICLR 2021): one closing section for every report with an ODE model.

`odelab.reproduce.render` appends `section(arms(jobs))` to a report whose runs hold an ODE block (a
positive forward-NFE metric) and writes `validity.json` beside its `claims.json`; the scorecard
lists the arms it flags. The metrics come from the `ODEValidity` callback
(`+callbacks@callbacks.ode_validity=ode_validity`): accuracy and state change under a finer
solver (dopri5 at tol 1e-5; a fixed grid at 4x the training steps) and the forward-then-backward
reconstruction error. An arm is the set of overrides its ODE runs do not share, seeds pooled.
Its flag: "moves beyond noise" when the 95 % paired interval of finer minus training-solver
accuracy (over seeds) excludes zero for either finer solver, "holds" when both hold zero,
"not measured" when its records predate the check; models without an accuracy get no flag.
A model of several blocks (`test/<block>/...`) shows its worst block's state change and
reconstruction error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from odelab.reports.base import VALIDITY, JobResult
from odelab.reports.render import render
from odelab.reports.stats import compare
from odelab.tables import mean_std

FINER = ("finer_dopri5", "finer_fixed4x")
RECON = "reconstruction_rel_err"
# Per-run plumbing, and the check itself (records from before and after it join one arm).
IGNORED = frozenset({"seed", "resume", "logger", "ckpt_path", VALIDITY.split("=")[0]})
FLAGGED = "moves beyond noise"
ADD_CHECK = VALIDITY  # the override every reproduction run gets


@dataclass(frozen=True)
class ArmValidity:
    """The checks of one arm's ODE runs (`mean`, `std` over its measured seeds)."""

    arm: str
    runs: int
    measured: int
    acc: tuple[float | None, float | None]
    acc_delta: dict[str, tuple[float, float, float]]  # finer -> (mean, low, high), points
    state_change: dict[str, tuple[float | None, float | None]]
    reconstruction: tuple[float | None, float | None]
    flag: str


def is_ode_run(job: JobResult) -> bool:
    return job.ok and any("nfe_forward" in k and (v or 0) > 0 for k, v in job.metrics.items())


def _arm_keys(jobs: Sequence[JobResult]) -> list[str]:
    """The override keys that differ among `jobs`, set or not counting as a difference (seed and
    run plumbing aside); an arm's name shows those its runs set."""
    keys = sorted({k for job in jobs for k in job.overrides} - IGNORED)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _arm(job: JobResult, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={job.overrides[k]}" for k in keys if k in job.overrides) or "all runs"


def _worst(metrics: dict[str, float], name: str) -> float | None:
    """`test/<name>`, or for a model of several blocks (`test/<block>/<name>`) the largest."""
    values = [v for k, v in metrics.items() if k == f"test/{name}" or (
        k.startswith("test/") and k.endswith(f"/{name}") and k.count("/") == name.count("/") + 2
    )]  # fmt: skip
    return max(values) if values else None


def _check(arm: str, jobs: Sequence[JobResult]) -> ArmValidity:
    done = [job.metrics for job in jobs if _worst(job.metrics, RECON) is not None]
    trained = [m.get("test/train_solver/acc") for m in done]
    deltas, changes = {}, {}
    for finer in FINER:
        changes[finer] = mean_std([_worst(m, f"{finer}/state_rel_change") for m in done])
        finer_acc = [m.get(f"test/{finer}/acc") for m in done]
        if any(a is not None for a in finer_acc):
            c = compare(
                [100 * a if a is not None else None for a in finer_acc],
                [100 * a if a is not None else None for a in trained],
                a_name=finer, b_name="train_solver", metric="acc", higher_is_better=True,
            )  # fmt: skip
            deltas[finer] = (c.mean_diff, c.low, c.high)
    if not done:
        flag = "not measured"
    elif not deltas:
        flag = "no accuracy"
    elif not any(math.isfinite(low) for _, low, _ in deltas.values()):
        flag = "one run: no interval"
    elif any(math.isfinite(low) and not low <= 0 <= high for _, low, high in deltas.values()):
        flag = FLAGGED
    else:
        flag = "holds"
    acc = mean_std([100 * a if a is not None else None for a in trained])
    recon = mean_std([_worst(m, RECON) for m in done])
    return ArmValidity(arm, len(jobs), len(done), acc, deltas, changes, recon, flag)


def arms(jobs: Sequence[JobResult]) -> list[ArmValidity]:
    """One row per arm of the ODE runs among `jobs`, in the order arms first appear."""
    ode = [job for job in jobs if is_ode_run(job)]
    keys = _arm_keys(ode)
    groups: dict[str, list[JobResult]] = {}
    for job in ode:
        groups.setdefault(_arm(job, keys), []).append(job)
    return [_check(arm, group) for arm, group in groups.items()]


def section(rows: Sequence[ArmValidity]) -> str:
    """The report's closing "Is it an ODE?" section ("" without ODE runs)."""
    if not rows:
        return ""
    measured = [r for r in rows if r.measured]
    runs = sum(r.runs for r in rows)
    return render("validity.md.j2", rows=measured, runs=runs, arms=len(rows), add=ADD_CHECK)


def _plain(value: object) -> object:
    """JSON-ready: tuples as lists, floats to 6 significant digits, NaN as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


def write_validity(path: Path, rows: Sequence[ArmValidity]) -> None:
    """`validity.json`: every arm's checks (the scorecard reads its flags)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [_plain(asdict(r)) for r in rows]
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_flags(path: Path) -> list[dict[str, object]]:
    """The arms of one `validity.json`, with their flag and counts."""
    rows = json.loads(path.read_text())
    keep = ("arm", "runs", "measured", "flag")
    return [{k: row[k] for k in keep} for row in rows]

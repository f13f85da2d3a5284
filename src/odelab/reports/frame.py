"""One pandas row per run: the table every report groups, aggregates and pivots.

    df = runs_frame(load_sweeps(budget_dir), best="val/error", best_mode="min")
    table = df[df.ok].groupby(["experiment", "solver"])["metric.test/acc"].agg(["mean", "std"])

Columns: `job`, `ok`, one column per Hydra override key (`experiment`, `seed`, ...; values kept
as the override strings), `metric.<key>` for every final metric, `best.<key>` for every metric
logged at the epoch where `best` was best (only when `best` is given: the direction of that
selection is the caller's `best_mode`, stated where the selection happens), `device` (one line),
`wall_s`, `nfe.<key>` for every NFE counter among the final metrics (a key containing "nfe"),
and `tag` (the section tag of the job's sweep, `base.conf_tags`) when `tags` are given.
A seed missing from the overrides is read from the run's config (the config default), so that
every row has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from odelab.reports.base import JobResult, device_text


def _best_row(job: JobResult, key: str, mode: Literal["min", "max"]) -> dict[str, float]:
    """The epoch-level history row (merged over rows of that epoch) where `key` is best."""
    epochs, values = job.run.epoch_series(key)
    if not values:
        return {}
    best_epoch = epochs[values.index((min if mode == "min" else max)(values))]
    merged: dict[str, float] = {}
    for row in job.run.history:
        if int(row.get("epoch", -1)) == best_epoch:
            merged.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
    return merged


def _seed(job: JobResult) -> str:
    config = job.run.config
    default = str(config.get("seed", 0)) if config is not None else "0"
    return job.overrides.get("seed", default)


def runs_frame(
    jobs: Sequence[JobResult],
    *,
    best: str | None = None,
    best_mode: Literal["min", "max"] = "min",
    tags: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The runs of `jobs` as a DataFrame, one row per job, in the jobs' order.

    Args:
        jobs: the finished and failed jobs (`load_sweeps(...)` or a sub-list).
        best: a validation metric logged per epoch; when given, `best.<key>` columns hold every
            metric logged at the epoch where it was best.
        best_mode: `min` (an error, a loss) or `max` (an accuracy) for `best`.
        tags: one section tag per sweep of the budget (`conf_tags(name)[budget]`); a job's
            tag is that of the sweep folder (`<sweep number>/<job>`) it was read from.

    Returns:
        The frame; empty with columns `job`, `ok` when there are no jobs.
    """
    rows: list[dict[str, Any]] = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.num, "ok": job.ok, **job.overrides, "seed": _seed(job)}
        for key, value in job.metrics.items():
            row[f"metric.{key}"] = value
            if "nfe" in key.lower():
                row[f"nfe.{key}"] = value
        if best is not None:
            row.update({f"best.{k}": v for k, v in _best_row(job, best, best_mode).items()})
        row["device"] = device_text(job.run.device) if job.run.device else "unknown"
        row["wall_s"] = job.seconds
        if tags:
            sweep = job.output_dir.parent.name
            row["tag"] = tags[int(sweep)] if sweep.isdigit() and int(sweep) < len(tags) else ""
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["job", "ok"])


def seed_values(frame: pd.DataFrame, column: str, **where: str) -> pd.Series:
    """`column` of the finished rows matching `where` (override key -> value), indexed by seed,
    sorted by seed (numerically when seeds are integers), NaN dropped.

    Two such series aligned with `a.align(b, join="inner")` give paired per-seed values.
    """
    rows = frame[frame["ok"]] if "ok" in frame else frame
    for key, value in where.items():
        rows = rows[rows[key].astype(str) == str(value)]
    if column not in rows:
        return pd.Series(dtype=float)
    series = rows.set_index("seed")[column].dropna().astype(float)
    return series.loc[sorted(series.index, key=lambda s: (len(str(s)), str(s)))]

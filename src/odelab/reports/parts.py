"""What the spiral, latent and speed reports share: their runs as one frame (with each run's
folder and per-epoch columns), a typed benchmark record, and a paper's claims judged."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import pandas as pd

import odelab.reports.claims as cl
from odelab.reports.base import Jobs, conf_tags, relative_path
from odelab.reports.frame import runs_frame
from odelab.reports.records import load_record

T = TypeVar("T")
Pick = Callable[[Sequence[float]], float]


def report_frame(
    jobs: Jobs,
    name: str,
    budget: str,
    epochs: dict[str, str] | None = None,
    pick: Pick = statistics.fmean,
) -> pd.DataFrame:
    """`runs_frame` of every job, tagged by `conf/reproduce/<name>.yaml`, with the run folder as
    `path` and, per `epochs` entry column -> key, `pick` of the key's per-epoch values (the
    final metric where the key was never logged per epoch)."""
    frame = runs_frame(jobs, tags=conf_tags(name).get(budget) or None)
    for column, key in (epochs or {}).items():
        series = [j.run.epoch_series(key)[1] for j in jobs]
        frame[column] = [
            pick(s) if s else j.metrics.get(key) for s, j in zip(series, jobs, strict=True)
        ]
    return frame.assign(path=[relative_path(j.output_dir) for j in jobs])


def bench_record(jobs: Jobs, name: str, schema: type[T]) -> T | None:
    """The budget's benchmark record `bench/<name>.json` as `schema`; None without one."""
    raw = getattr(jobs, "bench", {}).get(name)
    return None if raw is None else load_record(f"bench/{name}.json", schema, data=raw)


def judge(
    claims: Iterable[cl.Claim], budget: str, measure: Callable[[cl.Claim], tuple | None]
) -> list[cl.Verdict]:
    """Each claim judged on the values `measure(claim)` gives, `(a,)` for a value or a bound and
    `(a, b)` for a contrast; not testable, with why, where `budget` does not test it or
    `measure` gives None."""
    out = []
    for claim in claims:
        values = measure(claim) if budget in claim.budgets else None
        if values is None:
            testing = ", ".join(f"`{b}`" for b in claim.budgets) or "none yet"
            out.append(cl.not_testable(claim, claim.reason or f"budgets that test it: {testing}"))
        else:
            out.append(cl.evaluate(claim, *(list(v) for v in values)))
    return out


def differs(paper: str, report: str, ours: dict[str, str] | None) -> list[tuple[str, str, str]]:
    """(setting, paper, ours) rows of the paper's settings for `report`."""
    missing = "n/a (run config not found)"
    settings = cl.paper_settings(paper, report)
    return [(k, v, ours[k] if ours else missing) for k, v in settings.items()]

"""The records of issue 43's benchmarks: `bench/convergence.json`
(experiments/formula_convergence.py) and `bench/cost.json` (experiments/formula_cost.py)."""

from __future__ import annotations

from odelab.records import schema

ConvergencePoint = schema(
    "ConvergencePoint",
    "One solve: method, steps (or tolerance), mean |log p error|, NFE.",
    field=str,
    method=str,
    steps=int | None,
    tol=float | None,
    error=float,
    nfe=int,
)
Convergence = schema(
    "Convergence",
    "`bench/convergence.json`.",
    points=list[ConvergencePoint],
    fitted_order=dict,
)
CostPoint = schema(
    "CostPoint",
    "Median seconds per call of each log-density change at one dimension D, and the MB "
    "allocated in one call.",
    (int, "dim"),
    (float, "slogdet_s exact_s hutchinson_s slogdet_mb exact_mb hutchinson_mb"),
)
Cost = schema(
    "Cost",
    "`bench/cost.json`.",
    (int, "batch"),
    (list[CostPoint], "points"),
    (str, "memory"),
    (dict, "crossover"),
    (int, "threads"),
)

"""Issue 43: finite-step log-density error of formula (7) on two closed-form fields.

The fields: the diagonal tanh field (nonlinear) and a linear field dz/dt = A z on a Gaussian
base (log p(x) = log N(exp(A) x) + tr A, exact).

Integrates d log p/dt = -tr(df/dz) through the CNF's ODEBlock with Euler, midpoint and
RK4 at N = 1...256 steps and dopri5 over tolerances, and writes one JSON record per run
with the error against the closed form, the NFE and the fitted convergence order.

Beside them, formula (6) on the same field and the same N: the residual map z <- z + h f(z)
with log p(x) = log N(z_N) + sum_k log|det(I + h df/dz(z_k))| (slogdet of the autograd
Jacobian), method "residual6". Its states are Euler's, so "gap67" = mean |(6) - Euler (7)|
isolates the log-det against trace difference: per step log det(I + hJ) - h tr J = O(h^2),
so the gap over [0, 1] shrinks as O(h) (fitted order about 1).

Usage: python experiments/formula_convergence.py --out PATH [--max-steps 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from odelab.models.cnf import CNF, TraceEstimator, standard_normal_log_prob
from odelab.models.residual_flow import (
    LinearField,
    TanhField,
    linear_field_flow,
    linear_field_log_det,
    tanh_field_flow,
    tanh_field_log_det,
)
from odelab.ode import Solver
from odelab.records.formula import Convergence, ConvergencePoint

ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}
# (6) against the closed form, and (6) against Euler-(7) on the same states: both O(h).
DISCRETE = {"residual6": 1, "gap67": 1}


def solve_error(
    name: str, field, method: str, steps: int | None, tol: float | None, x, want
) -> ConvergencePoint:
    """Mean absolute log-density error of one CNF solve against the closed form."""
    if steps is not None:
        solver = Solver(method=method, step_size=1.0 / steps, rtol=None, atol=None)
    else:
        solver = Solver(method=method, rtol=tol, atol=tol)
    flow = CNF(field, solver, trace=TraceEstimator("exact"))
    with torch.no_grad():
        got = flow.log_prob(x).log_prob
    nfe = int(flow.block.nfe_forward)
    return ConvergencePoint(name, method, steps, tol, float((got - want).abs().mean()), nfe)


def residual_log_prob(field, x, steps: int) -> torch.Tensor:
    """Formula (6): log p(x) through N residual steps and the slogdet of each step's Jacobian."""
    h = 1.0 / steps
    z, log_det = x, torch.zeros(x.shape[0], dtype=x.dtype)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    for k in range(steps):
        t = torch.tensor(k * h, dtype=x.dtype)
        jac = torch.func.vmap(torch.func.jacrev(lambda zi, t=t: field(t, zi[None])[0]))(z)
        log_det = log_det + torch.linalg.slogdet(eye + h * jac).logabsdet
        z = z + h * field(t, z)
    return standard_normal_log_prob(z) + log_det


def discrete_points(name: str, field, steps: int, x, want) -> list[ConvergencePoint]:
    """(6)'s error against the closed form and its gap to Euler-(7) at N = `steps`."""
    with torch.no_grad():
        got6 = residual_log_prob(field, x, steps)
        euler = Solver(method="euler", step_size=1.0 / steps, rtol=None, atol=None)
        flow = CNF(field, euler, trace=TraceEstimator("exact"))
        got7 = flow.log_prob(x).log_prob
    return [
        ConvergencePoint(name, "residual6", steps, None, float((got6 - want).abs().mean()), steps),
        ConvergencePoint(name, "gap67", steps, None, float((got6 - got7).abs().mean()), steps),
    ]


def fitted_order(points: list[ConvergencePoint], floor: float = 1e-11) -> float:
    """Least-squares slope of log error against log h over points above round-off."""
    pts = [p for p in points if p.error > floor and p.steps and p.steps >= 4]
    h = np.log([1.0 / p.steps for p in pts])
    e = np.log([p.error for p in pts])
    return float(np.polyfit(h, e, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=256)
    args = parser.parse_args()
    a = torch.tensor([0.9, -0.6], dtype=torch.float64)
    # A rotation-plus-contraction: complex eigenvalues, so the flow is not diagonal.
    A = torch.tensor([[-0.5, 1.2], [-0.8, 0.3]], dtype=torch.float64)
    x = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fields = {
        "tanh": (
            TanhField(a),
            standard_normal_log_prob(tanh_field_flow(x, a, 1.0)) + tanh_field_log_det(x, a, 1.0),
        ),
        "linear": (
            LinearField(A),
            standard_normal_log_prob(linear_field_flow(x, A, 1.0))
            + linear_field_log_det(x, A, 1.0),
        ),
    }
    grid = [2**k for k in range(int(math.log2(args.max_steps)) + 1)]
    points = []
    for name, (field, want) in fields.items():
        points += [solve_error(name, field, m, n, None, x, want) for m in ORDERS for n in grid]
        points += [
            solve_error(name, field, "dopri5", None, 10.0**-k, x, want) for k in range(3, 11)
        ]
        points += [q for n in grid for q in discrete_points(name, field, n, x, want)]
    orders = {
        name: {
            m: fitted_order([p for p in points if p.method == m and p.field == name])
            for m in {**ORDERS, **DISCRETE}
        }
        for name in fields
    }
    record = dataclasses.asdict(Convergence(points=points, fitted_order=orders))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    for name, per in orders.items():
        for m, o in per.items():
            print(f"{name} {m}: fitted order {o:.2f} (expected {({**ORDERS, **DISCRETE})[m]})")


if __name__ == "__main__":
    main()

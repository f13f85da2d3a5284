"""Issue 43: cost against dimension of the discrete log-det (6) and the trace of (7).

For one random tanh MLP field per D, times (on this machine, one run side by side) the
per-step log-density change by slogdet(I + h J) with the Jacobian from autograd, the exact
trace (D backward passes) and Hutchinson (one backward pass), and reports the ratios.

Usage: python experiments/formula_cost.py --out PATH [--dims 2 4 ... 256] [--batch 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from odelab.models.cnf import exact_trace, hutchinson_trace, jacobian, vector_jacobian


@dataclasses.dataclass(frozen=True)
class CostPoint:
    """Median seconds per call of each log-density change at one dimension D."""

    dim: int
    slogdet_s: float
    exact_s: float
    hutchinson_s: float


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(dim: int, batch: int, repeats: int, h: float = 0.1) -> CostPoint:
    """Time the three log-det/trace computations for one field of width 64."""
    torch.manual_seed(dim)
    field = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, dim))
    z0 = torch.randn(batch, dim)
    eye = torch.eye(dim)

    def discrete() -> object:
        z = z0.clone().requires_grad_(True)
        jac = jacobian(field(z), z, create_graph=False)
        return torch.linalg.slogdet(eye + h * jac).logabsdet

    def exact() -> object:
        z = z0.clone().requires_grad_(True)
        return exact_trace(field(z), z, create_graph=False)

    def hutch() -> object:
        z = z0.clone().requires_grad_(True)
        v = torch.randn_like(z)
        return hutchinson_trace(vector_jacobian(field(z), z, v, create_graph=False), v)

    return CostPoint(
        dim,
        median_time(discrete, repeats),
        median_time(exact, repeats),
        median_time(hutch, repeats),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    points = [measure(d, args.batch, args.repeats) for d in args.dims]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"batch": args.batch, "points": [dataclasses.asdict(p) for p in points]}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    for p in points:
        print(
            f"D={p.dim}: (6)/(7) exact {p.slogdet_s / p.exact_s:.2f}, "
            f"(6)/(7) Hutchinson {p.slogdet_s / p.hutchinson_s:.1f}"
        )


if __name__ == "__main__":
    main()

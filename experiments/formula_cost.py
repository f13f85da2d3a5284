"""Issue 43: cost against dimension of the discrete log-det (6) and the trace of (7).

For one random tanh MLP field per D, times (on this machine, one run side by side) the
per-step log-density change by slogdet(I + h J) with the Jacobian from autograd, the exact
trace (D backward passes) and Hutchinson (one backward pass), and reports the ratios.
Memory is the bytes torch's CPU allocator hands out during one call (torch.profiler with
profile_memory=True, the sum of the positive self allocations over all ops): the allocation
volume, an upper bound on the call's peak, comparable across the three, not the process RSS.
(tracemalloc would not do: torch's allocator bypasses Python's.) The crossover dimension,
where (6) becomes more expensive than each (7), is interpolated in log D from the record
(`crossover`; the smallest D measured when (6) is dearer everywhere).

Usage: python experiments/formula_cost.py --out PATH [--dims 2 4 ... 256] [--batch 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from bench.timing import time_call
from odelab.models.cnf import exact_trace, hutchinson_trace, jacobian, vector_jacobian
from odelab.records.formula import Cost, CostPoint


def allocated_mb(fn: Callable[[], object]) -> float:
    """MB allocated by torch's CPU allocator during one call of `fn` (torch.profiler)."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    events = prof.key_averages()
    return sum(max(e.self_cpu_memory_usage, 0) for e in events) / 2**20


def crossover(dims: Sequence[int], ratio: Sequence[float]) -> float | None:
    """The D where `ratio` ((6) over (7)) first crosses 1 from below, linear in log D between
    the two measured dimensions that bracket it; the first D when it is above 1 throughout,
    None when it never reaches 1."""
    if ratio[0] >= 1.0:
        return float(dims[0])
    pairs = list(zip(dims, ratio, strict=True))
    for (d0, r0), (d1, r1) in zip(pairs[:-1], pairs[1:], strict=True):
        if r0 < 1.0 <= r1:
            u = (math.log(1.0) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return float(math.exp(math.log(d0) + u * (math.log(d1) - math.log(d0))))
    return None


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `repeats` calls after one warm-up call."""
    times = sorted(time_call(fn, warmup=1, repeats=repeats).wall_s)
    return times[len(times) // 2]


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
        allocated_mb(discrete),
        allocated_mb(exact),
        allocated_mb(hutch),
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
    dims = [p.dim for p in points]
    cost = Cost(
        batch=args.batch,
        points=points,
        memory="torch.profiler allocated MB per call (profile_memory)",
        crossover={
            "exact": crossover(dims, [p.slogdet_s / p.exact_s for p in points]),
            "hutchinson": crossover(dims, [p.slogdet_s / p.hutchinson_s for p in points]),
        },
        threads=torch.get_num_threads(),
    )
    record = dataclasses.asdict(cost)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    for p in points:
        print(
            f"D={p.dim}: (6)/(7) exact {p.slogdet_s / p.exact_s:.2f}, "
            f"(6)/(7) Hutchinson {p.slogdet_s / p.hutchinson_s:.1f}, "
            f"memory {p.slogdet_mb:.2f} / {p.exact_mb:.2f} / {p.hutchinson_mb:.2f} MB"
        )
    print("crossover D:", record["crossover"])


if __name__ == "__main__":
    main()

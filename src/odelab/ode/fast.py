"""Fast paths behind `ODEBlock`: which one runs a solve, and the capture state kept per block.

The paths live in their own modules: per-sample step control in `torchode_backend`, the
sync-free fixed-grid loop and its CUDA-graph capture in `capture`, the compiled field in
`compiled` (host-read counting for benchmarks lives in `experiments/bench/host_reads.py`).
`ODEBlock` chooses among them from `Solver` (`backend`, `capture`, `compile_field`); the
block's API, NFE counting and error translation are the same on every path.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

from odelab.ode.capture import (
    CAPTURE_METHODS,
    CapturedSolve,
    FixedGridSolve,
    capture_blocker,
    fixed_grid,
)
from odelab.ode.compiled import prepare_field
from odelab.ode.torchode_backend import TORCHODE_METHODS, TorchodeStats, torchode_solve

# Re-exported: benchmarks, reports and tests name them as `odelab.ode.fast.<name>`.
__all__ = [
    "CAPTURE_METHODS",
    "TORCHODE_METHODS",
    "CapturedSolve",
    "FixedGridSolve",
    "TorchodeStats",
    "capture_blocker",
    "fast_integrate",
    "fixed_grid",
    "prepare_field",
    "torchode_solve",
]

log = logging.getLogger(__name__)

State = Tensor | tuple[Tensor, ...]


def _note_once(block: Any, state: dict[str, Any], reason: str) -> None:
    if reason not in state.setdefault("logged", set()):
        state["logged"].add(reason)
        log.warning("solver.capture: %s (%s)", reason, getattr(block, "name", "field"))


def fast_integrate(
    block: Any, y0: State, times: Tensor
) -> tuple[State, TorchodeStats | None] | None:
    """The solve of `block` (an `ODEBlock`) on a fast path and its torchode statistics, or
    None where torchdiffeq runs it.

    Only the block's public interface is used: `solver`, `sensitivity`, `func`, `name`,
    `count` (its NFE counters) and `fast_state` (a dict the block owns for this module).

    - `solver.backend=torchode`: per-sample step control; the block keeps its per-sample
      statistics as `block.last_stats`.
    - `solver.capture=true`: the sync-free fixed-grid loop, captured as a CUDA graph on
      CUDA while autograd records (training); the reason is logged once where capture
      cannot apply. Adaptive methods, the adjoint and tuple states stay with torchdiffeq.
    """
    solver, func = block.solver, block.func
    if solver.backend == "torchode":
        out, stats = torchode_solve(
            func,
            y0,
            times,
            solver.method,
            solver.rtol,
            solver.atol,
            solver.step_size,
            solver.max_num_steps,
            solver.describe(),
            block.name,
        )
        return out, stats
    state: dict[str, Any] = block.fast_state
    reason = capture_blocker(y0, block.sensitivity.adjoint, solver.method)
    uncaptured_ok = (
        reason is not None
        and isinstance(y0, Tensor)
        and (solver.method in CAPTURE_METHODS and not block.sensitivity.adjoint)
    )
    if reason is not None and not uncaptured_ok:
        _note_once(block, state, reason + "; torchdiffeq runs this solve")
        return None
    cached = state.get("solve")
    if cached is None or cached[0] is not times:
        # One host read per distinct times tensor (tasks reuse theirs batch after batch).
        solve = FixedGridSolve(func, solver.method, times.tolist(), solver.step_size)
        state["solve"] = cached = (times, solve)
        state.pop("graphs", None)
    solve = cached[1]
    if reason is not None:
        _note_once(block, state, reason)
        return solve(y0), None
    graphs: dict[Any, CapturedSolve] = state.setdefault("graphs", {})
    key = (tuple(y0.shape), y0.dtype, y0.device, y0.requires_grad)
    if state.get("capture_failed"):
        return solve(y0), None
    graph = graphs.get(key)
    if graph is None:
        count = block.count
        before = count.forward
        try:
            graph = CapturedSolve(solve, y0.detach().clone().requires_grad_(y0.requires_grad))
        except Exception as err:  # noqa: BLE001 - any capture failure falls back, with its reason
            count.forward = before
            state["capture_failed"] = True
            _note_once(block, state, f"CUDA graph capture failed ({type(err).__name__}: {err})")
            return solve(y0), None
        count.forward = before  # warm-up and capture calls are not solves
        graphs[key] = graph
    out = graph(y0)
    block.count.forward += solve.nfe  # replay runs no Python: count the known evaluations
    return out, None

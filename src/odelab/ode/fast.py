"""Fast paths behind `ODEBlock`: per-sample step control (torchode), a sync-free fixed-grid
loop that CUDA can capture as one graph, and host-read counting for benchmarks.

`ODEBlock` chooses among them from `Solver` (`backend`, `capture`, `compile_field`); the
block's API, NFE counting and error translation are the same on every path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError, SolverError

log = logging.getLogger(__name__)

State = Tensor | tuple[Tensor, ...]

# torchode's stepping methods odelab exposes; euler walks a fixed grid (solver.step_size).
TORCHODE_METHODS = frozenset({"dopri5", "tsit5", "euler"})
# Fixed-grid methods the sync-free loop implements (the same tableaus as torchdiffeq's).
CAPTURE_METHODS = frozenset({"euler", "midpoint", "rk4"})


# ---------------------------------------------------------------------------
# Per-sample step control: torchode


class _Packer:
    """Flattens a state (a tensor or a tuple of tensors sharing the batch axis) to the
    (batch, features) matrix torchode integrates, and back."""

    def __init__(self, state: State):
        self.single = isinstance(state, Tensor)
        tensors = (state,) if isinstance(state, Tensor) else tuple(state)
        self.batch = tensors[0].shape[0]
        if any(s.shape[:1] != (self.batch,) for s in tensors):
            raise ConfigError(
                "solver.backend=torchode needs every state tensor to share the leading batch "
                f"axis, got shapes {[tuple(s.shape) for s in tensors]}; use solver.backend="
                "torchdiffeq for this model"
            )
        self.shapes = [s.shape[1:] for s in tensors]
        self.sizes = [math.prod(s) for s in self.shapes]
        # Per-sample times reach the field as (batch, 1, ..., 1): they broadcast against
        # the state wherever a scalar time would.
        self.time_shape = (self.batch,) + (1,) * (tensors[0].ndim - 1)

    def pack(self, state: State) -> Tensor:
        tensors = (state,) if isinstance(state, Tensor) else state
        if len(tensors) == 1:
            return tensors[0].reshape(self.batch, -1)
        return torch.cat([s.reshape(self.batch, -1) for s in tensors], dim=1)

    def unpack(self, flat: Tensor, lead: tuple[int, ...] = ()) -> State:
        """(..., features) -> the state's layout with `lead` axes in front of each shape."""
        parts = torch.split(flat, self.sizes, dim=-1)
        out = tuple(
            p.reshape(*lead, self.batch, *s) for p, s in zip(parts, self.shapes, strict=True)
        )
        return out[0] if self.single else out


class _PackedField(nn.Module):
    """The counted field as torchode sees it: f(t of shape (batch,), y of shape (batch, F))."""

    def __init__(self, func: nn.Module, packer: _Packer):
        super().__init__()
        self.func = func
        self.packer = packer

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        p = self.packer
        return p.pack(self.func(t.reshape(p.time_shape), p.unpack(y)))


@dataclass
class TorchodeStats:
    """Per-sample statistics of the latest torchode solve, kept as tensors (never read
    during training; benchmarks read them)."""

    n_steps: Tensor
    n_accepted: Tensor
    status: Tensor
    extra: dict[str, Any] = field(default_factory=dict)


def torchode_solve(
    func: nn.Module,
    y0: State,
    times: Tensor,
    method: str,
    rtol: float | None,
    atol: float | None,
    step_size: float | None,
    max_num_steps: int,
    describe: str,
    name: str,
    t_start: Tensor | None = None,
) -> tuple[State, TorchodeStats]:
    """Integrate with torchode: each sample gets its own step size (and, for 2-D `times` of
    shape (batch, T), its own output grid, starting at `t_start` when given, else at its
    first time). Returns the trajectory time-first, like torchdiffeq, and the per-sample
    statistics.

    Solver failures (status codes) are checked once, after the solve, in one host read.
    Gradients flow by direct back-propagation through torchode's steps.
    """
    import torchode as to

    packer = _Packer(y0)
    term = to.ODETerm(_PackedField(func, packer), with_stats=False)
    if method == "euler":
        if step_size is None:
            raise ConfigError(
                "solver.backend=torchode with solver.method=euler needs solver.step_size "
                "(torchode's fixed-step controller does not step between output times)"
            )
        step = to.Euler(term=term)
        controller: nn.Module = to.FixedStepController()
    else:
        step = to.Dopri5(term=term) if method == "dopri5" else to.Tsit5(term=term)
        controller = to.IntegralController(atol=atol, rtol=rtol, term=term)
    batch = packer.batch
    t_eval = times if times.ndim == 2 else times.expand(batch, -1)
    start = t_eval[:, 0] if t_start is None else t_start.expand(batch)
    problem = to.InitialValueProblem(
        y0=packer.pack(y0), t_start=start, t_end=t_eval[:, -1], t_eval=t_eval
    )
    dt0 = None
    if method == "euler":
        direction = torch.sign(t_eval[:, -1] - t_eval[:, 0])
        dt0 = direction * step_size
    solver = to.AutoDiffAdjoint(step, controller, max_steps=max_num_steps)
    solution = solver.solve(problem, term=term, dt0=dt0)
    ys = solution.ys.transpose(0, 1)  # (T, batch, F): torchdiffeq's time-first layout
    status = solution.status
    stats = solution.stats
    # One host read per solve; the block's NaN/inf check of the output is the other.
    if bool((status != 0).any()):
        codes = sorted({int(c) for c in status.tolist()} - {0})
        names = ", ".join(to.Status(c).name for c in codes)
        raise SolverError(
            f"the solve of {name} with {describe} (torchode, per-sample steps) stopped: "
            f"{names} for {int((status != 0).sum())} of {batch} samples. The dynamics are "
            "stiff or diverging: loosen solver.rtol/atol, raise solver.max_num_steps, "
            "lower the learning rate, or use a fixed-step solver."
        )
    out = packer.unpack(ys, lead=(ys.shape[0],))
    return out, TorchodeStats(
        n_steps=stats.get("n_steps", torch.zeros(0)),
        n_accepted=stats.get("n_accepted", torch.zeros(0)),
        status=status,
    )


# ---------------------------------------------------------------------------
# Sync-free fixed-grid loop (captured as a CUDA graph on CUDA)


def fixed_grid(times: list[float], step_size: float | None) -> list[float]:
    """The grid torchdiffeq's fixed-step solvers walk, computed on the host.

    With a step size: start + k * step_size for k = 0 .. ceil(span / step + 1) - 1, the
    last point moved onto the end time; without one: the output times.
    """
    if step_size is None:
        return list(times)
    start, end = times[0], times[-1]
    n = math.ceil((end - start) / step_size + 1)
    grid = [k * step_size + start for k in range(n)]
    grid[-1] = end
    return grid


def _stages(method: str) -> int:
    return {"euler": 1, "midpoint": 2, "rk4": 4}[method]


class FixedGridSolve(nn.Module):
    """Fixed-grid Runge-Kutta (euler, midpoint, rk4 with torchdiffeq's 3/8 rule) over a grid
    known on the host: no host read of a device tensor anywhere, so the loop runs without
    synchronising and CUDA can capture it (forward and backward) as one graph.

    Output times off the grid are linearly interpolated, as torchdiffeq does.
    """

    def __init__(self, func: nn.Module, method: str, times: list[float], step_size: float | None):
        super().__init__()
        if method not in CAPTURE_METHODS:
            raise ConfigError(
                "solver.capture=true needs a fixed-grid solver.method in "
                f"{sorted(CAPTURE_METHODS)}, got {method!r}"
            )
        self.func = func
        self.method = method
        self.step_size = step_size
        # Decreasing times are walked as increasing ones of -t (as torchdiffeq does): the
        # field sees the real times, its values change sign.
        self.sign = 1.0 if times[-1] > times[0] else -1.0
        self.times = [self.sign * t for t in times]
        self.grid = fixed_grid(self.times, step_size)
        self.nfe = _stages(method) * (len(self.grid) - 1)
        self._t: Tensor | None = None
        # For each output time after the first: (grid step index, interpolation weight).
        self._outputs: list[tuple[int, float]] = []
        j = 1
        for i in range(len(self.grid) - 1):
            t0, t1 = self.grid[i], self.grid[i + 1]
            while j < len(self.times) and t1 >= self.times[j]:
                tj = self.times[j]
                weight = 0.0 if tj == t0 else 1.0 if tj == t1 else (tj - t0) / (t1 - t0)
                self._outputs.append((i, weight))
                j += 1

    def _grid_tensor(self, like: Tensor) -> Tensor:
        t = self._t
        if t is None or t.device != like.device or t.dtype != like.dtype:
            real = [self.sign * g for g in self.grid]
            t = torch.tensor(real, dtype=like.dtype, device=like.device)
            self._t = t
        return t

    def forward(self, y0: Tensor) -> Tensor:
        grid, sign = self.grid, self.sign
        tg = self._grid_tensor(y0)  # the real times of the grid points

        def f(t: Tensor, y: Tensor) -> Tensor:
            k = self.func(t, y)
            return k if sign > 0 else -k

        outputs = [y0]
        pending = iter(self._outputs)
        target = next(pending, None)
        y = y0
        for i in range(len(grid) - 1):
            dt = grid[i + 1] - grid[i]
            t0, t1 = tg[i], tg[i + 1]
            k1 = f(t0, y)
            if self.method == "euler":
                dy = dt * k1
            elif self.method == "midpoint":
                dy = dt * f(t0 + sign * 0.5 * dt, y + (0.5 * dt) * k1)
            else:
                k2 = f(t0 + sign * dt / 3, y + dt * k1 / 3)
                k3 = f(t0 + sign * dt * 2 / 3, y + dt * (k2 - k1 / 3))
                k4 = f(t1, y + dt * (k1 - k2 + k3))
                dy = (k1 + 3 * (k2 + k3) + k4) * (dt * 0.125)
            y1 = y + dy
            while target is not None and target[0] == i:
                w = target[1]
                outputs.append(y if w == 0.0 else y1 if w == 1.0 else y + w * (y1 - y))
                target = next(pending, None)
            y = y1
        return torch.stack(outputs)


class CapturedSolve:
    """A `FixedGridSolve` captured once as CUDA graphs (forward and backward) by
    `torch.cuda.make_graphed_callables` and replayed on every call.

    The field's Python code does not run on replay, so the block adds the solve's known
    evaluation count to its counters instead of counting calls.
    """

    def __init__(self, solve: FixedGridSolve, sample: Tensor):
        # A twin of the loop (same field, grid and outputs): make_graphed_callables replaces
        # the module's forward, and the uncaptured loop must stay uncaptured for other
        # shapes and for evaluation.
        twin = FixedGridSolve(
            solve.func, solve.method, [solve.sign * t for t in solve.times], solve.step_size
        )
        self.solve = twin
        self.key = (tuple(sample.shape), sample.dtype, sample.device, sample.requires_grad)
        self.graphed = torch.cuda.make_graphed_callables(twin, (sample,))

    def __call__(self, y0: Tensor) -> Tensor:
        return self.graphed(y0)


def capture_blocker(y0: State, sensitivity_adjoint: bool, method: str) -> str | None:
    """Why a solve cannot be captured as a CUDA graph (None: it can)."""
    if method not in CAPTURE_METHODS:
        return f"solver.method={method} is not a fixed-grid method ({sorted(CAPTURE_METHODS)})"
    if sensitivity_adjoint:
        return "the adjoint solves a second ODE inside backward(); capture needs sensitivity=direct"
    if not isinstance(y0, Tensor):
        return "the state is a tuple of tensors; capture handles a single tensor state"
    if y0.device.type != "cuda":
        return "CUDA graphs need a CUDA device; the sync-free fixed-grid loop runs uncaptured"
    if not torch.is_grad_enabled():
        return "no autograd in this call (evaluation); the uncaptured loop is as fast here"
    return None


# ---------------------------------------------------------------------------
# Counting host reads (device syncs on CUDA)


# Every host read of a tensor's value dispatches to this op: Tensor.item(), bool(), float(),
# int(), a comparison used in a Python `if`/`while`. On CUDA each one waits for the device.
_SCALAR_READ = torch.ops.aten._local_scalar_dense.default
_LIBRARIES = ("odelab", "torchdiffeq", "torchode", "lightning", "torchmetrics")
# Frames of the dispatch machinery and of this module are not where a read comes from.
_SKIP = (
    "torch/utils/_python_dispatch",
    "torch/_tensor.py",
    "torch/overrides.py",
    "torch/_dynamo/",
    "torch/_compile.py",
    __file__,
)


def _caller_library() -> str:
    """The library of the innermost Python frame that asked for a host read."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if not any(skip in path for skip in _SKIP):
            for lib in _LIBRARIES:
                if f"/{lib}/" in path:
                    return lib
            if "/torch/optim/" in path:
                return "torch.optim"
            return "torch" if "/torch/" in path else "other"
        frame = frame.f_back
    return "other"


@dataclass
class SyncCount:
    """Host reads of tensor values (`aten::_local_scalar_dense`), in total and by the
    library whose code asked for them."""

    total: int = 0
    by_library: dict[str, int] = field(default_factory=dict)

    def add(self, library: str) -> None:
        self.total += 1
        self.by_library[library] = self.by_library.get(library, 0) + 1


@contextmanager
def count_host_reads() -> Iterator[SyncCount]:
    """Count the host reads of tensor values made inside the block.

    Every read dispatches to one op, `aten::_local_scalar_dense`, which a dispatch mode
    sees however it was asked for; the Python stack names the library. On the CPU a host
    read is a plain memory load; each one counted here waits for the device when the same
    code runs on CUDA with the tensor there (reads of tensors that live on the host, such
    as the optimizer's step counters, do not).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    count = SyncCount()

    class _Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func is _SCALAR_READ:
                count.add(_caller_library())
            return func(*args, **(kwargs or {}))

    with _Reads():
        yield count


def prepare_field(field: nn.Module, solver: Any, sensitivity: Any) -> None:
    """Check the fast-path settings of a block, and compile its field if asked.

    The field is compiled in place (`nn.Module.compile`: its `__call__` goes through
    `torch.compile`), so its parameters and state-dict keys stay as they are and
    checkpoints load either way.
    """
    if solver.backend == "torchode" and sensitivity.adjoint:
        raise ConfigError(
            "sensitivity.method=adjoint is not available with solver.backend=torchode: "
            "torchode's backsolve adjoint evaluates the field one sample at a time under "
            "vmap, which odelab's batched fields do not support; use sensitivity=direct "
            "or solver.backend=torchdiffeq"
        )
    if solver.capture and solver.backend != "torchdiffeq":
        raise ConfigError("solver.capture=true needs solver.backend=torchdiffeq")
    if solver.compile_field:
        field.compile()


# ---------------------------------------------------------------------------
# The block's entry point


def _note_once(block: nn.Module, state: dict[str, Any], reason: str) -> None:
    if reason not in state.setdefault("logged", set()):
        state["logged"].add(reason)
        log.warning("solver.capture: %s (%s)", reason, getattr(block, "name", "field"))


def fast_integrate(block: Any, y0: State, times: Tensor) -> State | None:
    """The solve of `block` (an `ODEBlock`) on a fast path, or None where torchdiffeq runs it.

    - `solver.backend=torchode`: per-sample step control; its per-sample statistics are
      kept on `block.last_stats`.
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
        block.__dict__["last_stats"] = stats
        return out
    # Plain dict in the instance namespace: not a submodule, so the state dict is unchanged.
    state: dict[str, Any] = block.__dict__.setdefault("_fast_state", {})
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
        return solve(y0)
    graphs: dict[Any, CapturedSolve] = state.setdefault("graphs", {})
    key = (tuple(y0.shape), y0.dtype, y0.device, y0.requires_grad)
    if state.get("capture_failed"):
        return solve(y0)
    graph = graphs.get(key)
    if graph is None:
        count = func.count
        before = count.forward
        try:
            graph = CapturedSolve(solve, y0.detach().clone().requires_grad_(y0.requires_grad))
        except Exception as err:  # noqa: BLE001 - any capture failure falls back, with its reason
            count.forward = before
            state["capture_failed"] = True
            _note_once(block, state, f"CUDA graph capture failed ({type(err).__name__}: {err})")
            return solve(y0)
        count.forward = before  # warm-up and capture calls are not solves
        graphs[key] = graph
    out = graph(y0)
    func.count.forward += solve.nfe  # replay runs no Python: count the known evaluations
    return out

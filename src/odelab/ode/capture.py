"""A sync-free fixed-grid Runge-Kutta loop, and its capture as CUDA graphs.

The loop reads no device tensor on the host, so CUDA can capture it (forward and backward)
as one graph; `odelab.ode.fast` decides per solve whether capture applies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError

State = Tensor | tuple[Tensor, ...]

# Fixed-grid methods the sync-free loop implements (the same tableaus as torchdiffeq's).
CAPTURE_METHODS = frozenset({"euler", "midpoint", "rk4"})


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

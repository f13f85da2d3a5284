"""The one place where odelab integrates an ODE.

Every task hands a vector field `f(t, z)` (a plain `nn.Module`) to an `ODEBlock`;
the block wraps torchdiffeq, applies the solver and sensitivity settings, counts
function evaluations for the forward and backward pass separately, and turns
solver failures into errors that say what to change.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from odelab.errors import ConfigError, SolverError
from odelab.ode.config import Sensitivity, Solver
from odelab.ode.fast import fast_integrate, prepare_field
from odelab.ode.torchode_backend import TorchodeStats

State = Tensor | tuple[Tensor, ...]


def _shapes(state: State) -> list[tuple[int, ...]]:
    if isinstance(state, Tensor):
        return [tuple(state.shape)]
    return [tuple(s.shape) for s in state]


def _all_finite(state: State) -> bool:
    """One device-to-host transfer per solve, however many tensors the state holds."""
    tensors = (state,) if isinstance(state, Tensor) else state
    if len(tensors) == 1:
        return bool(torch.isfinite(tensors[0]).all())
    return bool(torch.stack([torch.isfinite(s).all() for s in tensors]).all())


def _first_nonfinite_time(state: State, times: Tensor) -> float | None:
    """The first output time at which the trajectory holds NaN or inf (error path only)."""
    tensors = (state,) if isinstance(state, Tensor) else state
    bad = torch.zeros(len(times), dtype=torch.bool, device=times.device)
    for s in tensors:
        bad |= ~torch.isfinite(s.reshape(len(times), -1)).all(dim=1)
    index = torch.nonzero(bad)
    return float(times[index[0, 0]]) if len(index) else None


@dataclass
class NFECount:
    """Evaluation counters, kept outside `nn.Module` attributes: a module's
    `__setattr__` costs microseconds, paid on every evaluation otherwise."""

    forward: int = 0
    backward: int = 0
    in_forward: bool = False
    solve_start: int = 0
    backward_mark: int = 0
    solver: Solver | None = None
    # The time of the latest evaluation, kept as the tensor the solver passed:
    # reading it would cost a host synchronisation per step; errors read it once.
    last_t: Tensor | None = None

    def reached(self, in_forward: bool) -> str:
        """`t` reached and evaluations used by the solve in progress, for error messages."""
        used = self.forward - self.solve_start if in_forward else self.backward - self.backward_mark
        # Per-sample solves (torchode) pass one time per sample: name the first sample's.
        t = "?" if self.last_t is None else f"{float(self.last_t.reshape(-1)[0]):.6g}"
        return f"reached t={t} after {used} function evaluations (NFE)"


@dataclass(frozen=True)
class SolveStats:
    """What a block's solves cost, read by callbacks and benchmarks.

    Args:
        nfe_forward: field evaluations in forward solves since the last reset.
        nfe_backward: field evaluations in adjoint (backward) solves since the last reset.
        steps: per-sample step counts of the latest torchode solve (None on other paths).
    """

    nfe_forward: int
    nfe_backward: int
    steps: Tensor | None = None


class CountedField(nn.Module):
    """Wraps a vector field and counts its evaluations.

    Calls made while `forward_pass()` is active count as forward NFE; all other
    calls (the adjoint solve inside `backward()`) count as backward NFE.
    """

    def __init__(self, field: nn.Module, max_nfe: int | None = None, name: str = "field"):
        super().__init__()
        self.field = field
        self.max_nfe = max_nfe
        self.name = name
        self.count = NFECount()
        self.deadline: float | None = None  # time.perf_counter() after which a solve stops

    @property
    def nfe_forward(self) -> int:
        return self.count.forward

    @property
    def nfe_backward(self) -> int:
        return self.count.backward

    @contextlib.contextmanager
    def forward_pass(self, solver: Solver) -> Iterator[None]:
        count = self.count
        count.in_forward = True
        count.solve_start = count.forward
        count.solver = solver  # described only if an error needs it
        try:
            yield
        finally:
            count.in_forward = False
            count.backward_mark = count.backward

    def reset(self) -> None:
        # In place: NFEMonitor resets every step, and assigning a new object would go
        # through nn.Module.__setattr__ (microseconds) each time.
        self.count.__init__()  # type: ignore[misc]

    def forward(self, t: Tensor, z: State) -> State:
        count = self.count
        count.last_t = t
        if count.in_forward:
            count.forward += 1
            used = count.forward - count.solve_start
        else:
            count.backward += 1
            used = count.backward - count.backward_mark
        if self.max_nfe is not None and used > self.max_nfe:
            phase = "forward" if count.in_forward else "adjoint (backward)"
            raise SolverError(
                f"{phase} solve of {self.name} with {count.solver.describe()} took more than "
                f"solver.max_nfe={self.max_nfe} function evaluations "
                f"({count.reached(count.in_forward)}). The dynamics are stiff "
                "or diverging: loosen solver.rtol/atol, lower the learning rate, regularize "
                "the field, or raise solver.max_nfe."
            )
        if self.deadline is not None and time.perf_counter() > self.deadline:
            phase = "forward" if count.in_forward else "adjoint (backward)"
            raise SolverError(
                f"{phase} solve of {self.name} with {count.solver.describe()} passed its "
                "wall-time deadline (the training budget, model.max_wall_s) "
                f"({count.reached(count.in_forward)})"
            )
        return self.field(t, z)


class ODEBlock(nn.Module):
    """Integrates `field` from `y0` over the times `t` with the configured solver.

    Args:
        field: vector field `f(t, z) -> dz/dt` returning the state's shape.
        solver: method and tolerances.
        sensitivity: direct back-propagation or the adjoint method.
        t: default output times (at least two, increasing or decreasing).
        return_trajectory: return the state at every time in `t` (leading time
            axis) instead of only the final state.
        name: config key of the field, used in error messages.
    """

    def __init__(
        self,
        field: nn.Module,
        solver: Solver | None = None,
        sensitivity: Sensitivity | None = None,
        t: Sequence[float] | Tensor = (0.0, 1.0),
        return_trajectory: bool = False,
        name: str = "model.field",
    ):
        super().__init__()
        self.solver = solver or Solver()
        self.sensitivity = sensitivity or Sensitivity()
        prepare_field(field, self.solver, self.sensitivity)  # checks fast paths; compiles
        self.func = CountedField(field, self.solver.max_nfe, name)
        self.register_buffer("t", _as_times(t, "t"), persistent=False)
        self.return_trajectory = return_trajectory
        self.name = name
        self._shape_checked = False
        # Tasks pass the same times tensor batch after batch; check it once.
        self._last_times: tuple[Tensor, Tensor] | None = None
        # Per-sample statistics of the latest torchode solve (None on other paths).
        self.last_stats: TorchodeStats | None = None
        # The slot the fast paths (`odelab.ode.fast`) keep their per-block state in: the
        # fixed-grid loop for the current times, captured graphs, reasons already logged.
        # A plain dict, not a submodule, so the state dict is the same on every path.
        self.fast_state: dict = {}

    @property
    def field(self) -> nn.Module:
        return self.func.field

    @property
    def nfe_forward(self) -> int:
        return self.func.nfe_forward

    @property
    def nfe_backward(self) -> int:
        return self.func.nfe_backward

    @property
    def count(self) -> NFECount:
        """The live evaluation counters (fast paths add the evaluations a replay skips)."""
        return self.func.count

    @property
    def stats(self) -> SolveStats:
        """A snapshot of the evaluation counts and the latest per-sample step counts."""
        steps = None if self.last_stats is None else self.last_stats.n_steps
        return SolveStats(self.nfe_forward, self.nfe_backward, steps)

    def reset_nfe(self) -> None:
        self.func.reset()

    def set_deadline(self, deadline: float | None) -> None:
        """From `deadline` (a `time.perf_counter()` value) on, every field evaluation raises
        `SolverError`, inside a solve too (a training wall-time budget that one stiff
        implicit solve cannot overrun); None removes it."""
        self.func.deadline = deadline

    @contextlib.contextmanager
    def solver_override(self, **changes: object) -> Iterator[Solver]:
        """Solve with some solver settings replaced, then restore the originals.

        Used to re-test a trained model with a finer solver (Ott et al. 2021) without
        rebuilding it. The fast paths' per-block state is set aside for the duration
        (a loop built for the training step size must not replay) and put back afterwards,
        also when the body raises.

        Args:
            **changes: `Solver` fields to replace (method, rtol, atol, step_size, ...);
                capture is switched off unless given, since a captured graph belongs to
                one solver.

        Yields:
            The solver in effect inside the block.
        """
        changes.setdefault("capture", False)
        original, fast_state, max_nfe = self.solver, self.fast_state, self.func.max_nfe
        solver = replace(original, **changes)  # validates, raising ConfigError on bad input
        self.solver, self.fast_state = solver, {}
        self.func.max_nfe = solver.max_nfe
        try:
            yield solver
        finally:
            self.solver, self.fast_state = original, fast_state
            self.func.max_nfe = max_nfe

    def forward(
        self,
        y0: State,
        t: Tensor | None = None,
        adjoint_params: Sequence[Tensor] | None = None,
    ) -> State:
        times = self.t if t is None else self._times(t, _first(y0))
        if not self._shape_checked:
            self._check_field(y0, times)
        with self.func.forward_pass(self.solver):
            out = self._integrate(y0, times, adjoint_params)
        if not _all_finite(out):
            first = _first_nonfinite_time(out, times)
            at = "" if first is None else f" from t={first:.6g} on"
            nfe = self.func.count.forward - self.func.count.solve_start
            raise SolverError(
                f"the solve of {self.name} with {self.solver.describe()} over "
                f"[{float(times[0]):.6g}, {float(times[-1]):.6g}] returned NaN or inf{at} "
                f"after {nfe} function evaluations (NFE). "
                "The field or its inputs contain non-finite values, or the dynamics blew up: "
                "lower the learning rate, clip gradients (trainer.gradient_clip_val), or "
                "tighten the solver tolerances."
            )
        if self.return_trajectory:
            return out
        return out[-1] if isinstance(out, Tensor) else tuple(s[-1] for s in out)

    def _times(self, t: Sequence[float] | Tensor, like: Tensor) -> Tensor:
        last = self._last_times
        if last is not None and last[0] is t and last[1].device == like.device:
            return last[1]
        times = _as_times(t, "t", like=like)
        # Times that require grad (a learned end time) are new each step; caching them
        # would keep the previous step's graph alive.
        if isinstance(t, Tensor) and not t.requires_grad:
            self._last_times = (t, times)
        return times

    def _integrate(
        self, y0: State, times: Tensor, adjoint_params: Sequence[Tensor] | None
    ) -> State:
        if self.solver.backend != "torchdiffeq" or self.solver.capture:
            fast = fast_integrate(self, y0, times)  # None: torchdiffeq does this solve
            if fast is not None:
                out, stats = fast
                if stats is not None:
                    self.last_stats = stats
                return out
        kwargs = self.solver.odeint_kwargs()
        try:
            if self.sensitivity.adjoint:
                kwargs.update(self.sensitivity.odeint_adjoint_kwargs(self.solver))
                if adjoint_params is not None:
                    kwargs["adjoint_params"] = tuple(adjoint_params)
                return odeint_adjoint(self.func, y0, times, **kwargs)
            return odeint(self.func, y0, times, **kwargs)
        except (AssertionError, RuntimeError) as err:
            text = str(err)
            if "max_num_steps" in text or "underflow" in text:
                count = self.func.count
                raise SolverError(
                    f"the solve of {self.name} with {self.solver.describe()} ran away: "
                    f"{count.reached(count.in_forward)} "
                    f"of [{float(times[0]):.6g}, {float(times[-1]):.6g}] ({text}). "
                    "The dynamics are stiff or diverging: tighten solver.rtol/atol if they are "
                    "loose (large steps let the state blow up) or loosen them if they are tight, "
                    "raise solver.max_num_steps, lower the learning rate, or use a fixed-step "
                    "solver (solver=rk4)."
                ) from err
            raise

    def _check_field(self, y0: State, times: Tensor) -> None:
        try:
            with torch.no_grad():
                out = self.field(times[0], y0)
        except RuntimeError as err:
            raise ConfigError(
                f"{self.name} fails on a state of shape {_shapes(y0)} ({err}). Its input and "
                f"output sizes must match the state; fix them in the config ({self.name})."
            ) from err
        if _shapes(out) != _shapes(y0):
            raise ConfigError(
                f"{self.name} returned shape {_shapes(out)} for a state of shape "
                f"{_shapes(y0)}; a vector field must return its input's shape. Fix the "
                f"field's output size in the config ({self.name})."
            )
        self._shape_checked = True


def _first(state: State) -> Tensor:
    return state if isinstance(state, Tensor) else state[0]


def _as_times(t: Sequence[float] | Tensor, key: str, like: Tensor | None = None) -> Tensor:
    times = torch.as_tensor(t, dtype=torch.get_default_dtype() if like is None else like.dtype)
    if like is not None:
        times = times.to(like.device)
    if times.ndim != 1 or times.numel() < 2:
        raise ConfigError(f"{key} needs at least two output times, got shape {tuple(times.shape)}")
    steps = times[1:] - times[:-1]
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise ConfigError(f"{key} must be strictly increasing or decreasing, got {times.tolist()}")
    return times


def odesolve(
    field: nn.Module,
    y0: State,
    t: Sequence[float] | Tensor,
    solver: Solver | None = None,
    sensitivity: Sensitivity | None = None,
    name: str = "field",
) -> State:
    """Solve once and return the trajectory at `t` (time axis first)."""
    block = ODEBlock(field, solver, sensitivity, t=t, return_trajectory=True, name=name)
    return block(y0)

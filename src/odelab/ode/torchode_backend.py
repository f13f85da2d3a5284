"""Per-sample step control through torchode: each sample of a batch gets its own step size
(and, with 2-D output times, its own output grid). `ODEBlock` runs it for
`solver.backend=torchode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError, SolverError

State = Tensor | tuple[Tensor, ...]

# torchode's stepping methods odelab exposes; euler walks a fixed grid (solver.step_size).
TORCHODE_METHODS = frozenset({"dopri5", "tsit5", "euler"})


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

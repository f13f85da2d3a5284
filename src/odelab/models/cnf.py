"""Continuous normalizing flows: the state and its log-density solved together.

With dz/dt = f(t, z), the log-density along a path obeys
d log p(z(t)) / dt = -tr(df/dz). Data x sits at t = 0 and the standard normal
base at t = t_end, so one solve forward in time gives

    log p(x) = log N(z(t_end); 0, I) + integral_0^t_end tr(df/dz) dt

and sampling solves the state alone backward from the base.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Sensitivity, Solver, odesolve

REGULARIZERS = ("kinetic", "jacobian")
# The smallest end time a learned one can reach.
MIN_T_END = 1e-3


# --- trace estimators ---------------------------------------------------------


def jacobian(f: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """df/dz per sample, shape (N, D, D): one backward pass per row (cost grows with D)."""
    rows = [
        torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
        for i in range(z.shape[1])
    ]
    return torch.stack(rows, dim=1)


def exact_trace(f: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """tr(df/dz) per sample from the full Jacobian (D backward passes)."""
    return jacobian(f, z, create_graph).diagonal(dim1=1, dim2=2).sum(dim=1)


def vector_jacobian(f: Tensor, z: Tensor, v: Tensor, create_graph: bool) -> Tensor:
    """v^T df/dz per sample: one backward pass whatever D."""
    return torch.autograd.grad(f, z, v, create_graph=create_graph, retain_graph=True)[0]


def hutchinson_trace(v_jac: Tensor, v: Tensor) -> Tensor:
    """v^T (df/dz) v, an unbiased estimate of the trace when E[v v^T] = I."""
    return (v_jac * v).sum(dim=1)


def gaussian_noise(like: Tensor) -> Tensor:
    return torch.randn_like(like)


def rademacher_noise(like: Tensor) -> Tensor:
    return torch.randint_like(like, 0, 2) * 2 - 1


NOISES: dict[str, Callable[[Tensor], Tensor]] = {
    "gaussian": gaussian_noise,
    "rademacher": rademacher_noise,
}


@dataclass(frozen=True)
class TraceEstimator:
    """How the CNF computes tr(df/dz); built from `conf/trace/*.yaml`.

    Args:
        estimator: "exact" (D backward passes) or "hutchinson" (one).
        noise: probe distribution, "gaussian" or "rademacher"; drawn once per
            solve; the Hutchinson estimator only (the exact one needs no probe).
    """

    estimator: str = "exact"
    noise: str = "rademacher"

    def __post_init__(self) -> None:
        if self.estimator not in ("exact", "hutchinson"):
            raise ConfigError(f"trace.estimator={self.estimator!r}; choose 'exact' or 'hutchinson'")
        if self.noise not in NOISES:
            raise ConfigError(f"trace.noise={self.noise!r}; choose one of {sorted(NOISES)}")


# --- augmented dynamics ---------------------------------------------------------


class CNFDynamics(nn.Module):
    """d/dt (z, a, kinetic..., jacobian...) for a user field f(t, z).

    `a` accumulates the trace, the optional accumulators integrate 1/2 |f|^2 and
    the Jacobian's squared Frobenius norm: exact with the exact trace (from the
    Jacobian it builds), |v^T df/dz|^2 (a Hutchinson estimate) with the Hutchinson one.
    A plain tensor state is moved by f alone (sampling needs no trace).
    Call `begin_solve` before each solve: it fixes the probe noise and what to
    integrate for that solve, so the adjoint pass sees the same noise.
    """

    def __init__(self, field: nn.Module, trace: TraceEstimator):
        super().__init__()
        self.field = field
        self.trace = trace
        self.estimator = trace.estimator
        self.regularizers: tuple[str, ...] = ()
        self.noise: Tensor | None = None

    def begin_solve(
        self, z: Tensor, estimator: str | None = None, regularizers: Sequence[str] = ()
    ) -> None:
        self.estimator = estimator or self.trace.estimator
        self.regularizers = tuple(regularizers)
        needs_noise = self.estimator == "hutchinson"
        self.noise = NOISES[self.trace.noise](z) if needs_noise else None

    def forward(self, t: Tensor, state: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        if isinstance(state, Tensor):
            return self.field(t, state)
        z = state[0]
        grad_wanted = torch.is_grad_enabled()
        # The trace needs df/dz even in evaluation (no_grad) and at the first
        # call, where z is the data and does not require grad yet. Without grad mode
        # z is detached even when it requires grad: the adjoint's backward evaluates
        # the field at saved outputs (for the gradient of the output times) under
        # no_grad, where z is a view made without a graph.
        with torch.enable_grad():
            if not (grad_wanted and z.requires_grad):
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            if self.estimator == "hutchinson":
                v_jac = vector_jacobian(f, z, self.noise, create_graph=grad_wanted)
                trace = hutchinson_trace(v_jac, self.noise)
                frobenius = v_jac.pow(2).sum(dim=1)
            else:
                # The exact trace builds the whole Jacobian anyway: its Frobenius norm
                # comes exactly and for free, with no probe and no extra backward pass.
                jac = jacobian(f, z, create_graph=grad_wanted)
                trace = jac.diagonal(dim1=1, dim2=2).sum(dim=1)
                frobenius = jac.pow(2).sum(dim=(1, 2))
            rates = [f, trace]
            for name in self.regularizers:
                rates.append(0.5 * f.pow(2).sum(dim=1) if name == "kinetic" else frobenius)
        if not grad_wanted:
            rates = [r.detach() for r in rates]
        return tuple(rates)


def state_and_logp_norm(state: Tensor | tuple[Tensor, ...]) -> Tensor:
    """Step-size control on z and log p only: the regularizer integrals are
    penalties, and controlling their error would add steps without helping the
    likelihood."""
    if isinstance(state, Tensor):
        return state.pow(2).mean().sqrt()
    return torch.max(state[0].pow(2).mean().sqrt(), state[1].pow(2).mean().sqrt())


@dataclass
class FlowOutput:
    """log p(x) per sample, the base point, and integrated regularizers (per sample)."""

    log_prob: Tensor
    base: Tensor
    regularizers: dict[str, Tensor] = dataclasses.field(default_factory=dict)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * z.pow(2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


class CNF(nn.Module):
    """A continuous normalizing flow between data (t = 0) and a standard normal (t = t_end).

    Args:
        field: time-dependent vector field f(t, z).
        solver: method and tolerances of every solve.
        sensitivity: direct or adjoint gradients (`sensitivity.seminorm` for the
            adjoint seminorm).
        trace: the trace estimator used in training.
        t_end: integration time (the initial value when it is learned).
        learn_t_end: make the end time a parameter (FFJORD's `train_T`). It is kept
            positive as softplus(raw) and reaches the solver as the last output time,
            so its gradient is the one of the solve's end point.
        eval_solver: the solver of every solve in evaluation mode (validation, test,
            density grids, sampling); None uses `solver` throughout. A recipe can train
            on a cheap fixed grid and still be scored at a tight tolerance.
    """

    supported_regularizers = REGULARIZERS

    def __init__(
        self,
        field: nn.Module,
        solver: Solver | None = None,
        sensitivity: Sensitivity | None = None,
        trace: TraceEstimator | None = None,
        t_end: float = 1.0,
        learn_t_end: bool = False,
        eval_solver: Solver | None = None,
    ):
        super().__init__()
        if not t_end > 0:
            raise ConfigError(f"model.flow.t_end must be > 0, got {t_end}")
        self.dynamics = CNFDynamics(field, trace or TraceEstimator())
        self.block = ODEBlock(
            self.dynamics,
            _with_norm(solver or Solver()),
            sensitivity,
            t=(0.0, t_end),
            name="model.flow.field",
        )
        # Both blocks wrap the same dynamics (the same parameters); each counts its own NFE.
        self.eval_block = (
            None
            if eval_solver is None
            else ODEBlock(
                self.dynamics, _with_norm(eval_solver), t=(0.0, t_end), name="model.flow.field"
            )
        )
        # t_end = MIN_T_END + softplus(raw): positive with a gradient everywhere, and a floor
        # that survives softplus underflowing to 0 (an empty time span has no solve).
        if learn_t_end and not t_end > MIN_T_END:
            raise ConfigError(f"model.flow.t_end must be > {MIN_T_END} to learn it, got {t_end}")
        start = t_end - MIN_T_END if learn_t_end else t_end
        raw = torch.tensor(start + math.log(-math.expm1(-start)))
        if learn_t_end:
            self.raw_t_end = nn.Parameter(raw)
        else:
            self.register_buffer("raw_t_end", raw)
        self.learn_t_end = learn_t_end

    @property
    def active_block(self) -> ODEBlock:
        """The block of the current mode: `eval_block` (when set) outside training."""
        if self.eval_block is not None and not self.training:
            return self.eval_block
        return self.block

    @property
    def t_end(self) -> Tensor:
        """The end time of the flow, a positive scalar (a function of a parameter if learned)."""
        end = nn.functional.softplus(self.raw_t_end)
        return end + MIN_T_END if self.learn_t_end else end

    def times(self, like: Tensor, reverse: bool = False) -> Tensor:
        """(0, t_end), or (t_end, 0) when `reverse`: the output times handed to the block."""
        end = self.t_end.to(like)
        ends = (end, torch.zeros_like(end)) if reverse else (torch.zeros_like(end), end)
        return torch.stack(ends)

    def log_prob(
        self, x: Tensor, estimator: str | None = None, regularizers: Sequence[str] = ()
    ) -> FlowOutput:
        """Density evaluation, data -> base, in one solve of (z, log p, regularizers...)."""
        unknown = set(regularizers) - set(REGULARIZERS)
        if unknown:
            raise ConfigError(
                f"unknown CNF regularizers {sorted(unknown)}; choose from {REGULARIZERS}"
            )
        self.dynamics.begin_solve(x, estimator, regularizers)
        zeros = x.new_zeros(x.shape[0])
        state = (x, zeros) + tuple(zeros.clone() for _ in regularizers)
        z, trace_integral, *integrals = self.active_block(state, t=self.times(x))
        return FlowOutput(
            log_prob=standard_normal_log_prob(z) + trace_integral,
            base=z,
            regularizers=dict(zip(regularizers, integrals, strict=False)),
        )

    def to_base(self, x: Tensor) -> Tensor:
        """Data -> base, the state alone."""
        return self.active_block(x, t=self.times(x))

    def sample(self, z: Tensor) -> Tensor:
        """Base -> data: solve the state alone backward in time."""
        return self.active_block(z, t=self.times(z, reverse=True))

    def trajectory(self, z: Tensor, n_frames: int) -> Tensor:
        """The flow from base (frame 0) to data (last frame), shape (n_frames, N, D)."""
        end = float(self.t_end.detach())
        times = torch.linspace(end, 0.0, n_frames, dtype=z.dtype, device=z.device)
        solver = self.active_block.solver
        return odesolve(self.dynamics, z, times, solver, name="model.flow.field")


def _with_norm(solver: Solver) -> Solver:
    """An adaptive solver controls the error of z and log p only (`state_and_logp_norm`)."""
    if solver.adaptive and "norm" not in solver.options:
        return dataclasses.replace(solver, options={**solver.options, "norm": state_and_logp_norm})
    return solver

"""Solver and sensitivity settings, built by Hydra from `conf/solver` and `conf/sensitivity`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from odelab.checks import boolean, check_args, integer, positive, text
from odelab.errors import ConfigError

# Methods that choose their own step from rtol/atol; the rest walk a fixed grid. (tsit5 is
# torchode's; the torchdiffeq table below does not list it.)
ADAPTIVE_METHODS = frozenset(
    {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "scipy_solver", "tsit5"}
)
# The methods torchdiffeq's `odeint` accepts. odelab keeps its own table rather than
# importing torchdiffeq's private one; tests/test_solver_matrix.py checks that every name
# here solves through `torchdiffeq.odeint` and that a name outside it is refused by both.
SOLVERS = frozenset(
    {
        "adaptive_heun",
        "bosh3",
        "dopri5",
        "dopri8",
        "euler",
        "explicit_adams",
        "fehlberg2",
        "fixed_adams",
        "heun2",
        "heun3",
        "implicit_adams",
        "midpoint",
        "rk4",
        "scipy_solver",
    }
)
BACKENDS = ("torchdiffeq", "torchode")


# Ranges of the arguments whatever the method (a fixed-grid method ignores rtol, but a
# negative one is still a typo to report).
_SOLVER_ARGS = {
    "method": text(),
    "rtol": positive(nullable=True),
    "atol": positive(nullable=True),
    "step_size": positive(nullable=True),
    "max_num_steps": integer(1),
    "max_nfe": integer(1, nullable=True),
    "compile_field": boolean(),
    "capture": boolean(),
}


@dataclass(frozen=True)
class Solver:
    """How to integrate: method and its accuracy settings.

    Args:
        method: a torchdiffeq method name (dopri5, rk4, euler, ...).
        rtol: relative tolerance (adaptive methods).
        atol: absolute tolerance (adaptive methods).
        step_size: step of a fixed-grid method; None steps between the output times.
        max_num_steps: adaptive methods stop with an error after this many steps (not
            scipy_solver, whose solvers take no step cap: max_nfe bounds them).
        max_nfe: any method stops with an error after this many evaluations in one
            solve (forward or adjoint); guards fixed-grid and adjoint solves too.
        options: extra torchdiffeq options passed through unchanged.
        backend: "torchdiffeq" (one step size for the whole batch) or "torchode" (each
            sample its own step size and output grid; methods dopri5, tsit5, euler).
        compile_field: compile the vector field with `torch.compile` (first solves pay
            the compile time).
        capture: fixed-grid methods (euler, midpoint, rk4) with direct gradients run a
            loop without host synchronisation, captured as a CUDA graph (forward and
            backward) on CUDA; where capture cannot apply the reason is logged once and the
            loop (or torchdiffeq) runs uncaptured.
    """

    method: str = "dopri5"
    rtol: float | None = 1e-3
    atol: float | None = 1e-3
    step_size: float | None = None
    max_num_steps: int = 10_000
    max_nfe: int | None = 100_000
    options: dict[str, Any] = field(default_factory=dict)
    backend: Literal["torchdiffeq", "torchode"] = "torchdiffeq"
    compile_field: bool = False
    capture: bool = False

    def __post_init__(self) -> None:
        check_args("solver", _SOLVER_ARGS, vars(self))
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"solver.backend={self.backend!r} is unknown; choose one of {list(BACKENDS)}"
            )
        if self.backend == "torchode":
            from odelab.ode.torchode_backend import TORCHODE_METHODS

            if self.method not in TORCHODE_METHODS:
                raise ConfigError(
                    f"solver.method={self.method!r} is not available with solver.backend="
                    f"torchode; choose one of {sorted(TORCHODE_METHODS)}"
                )
        elif self.method not in SOLVERS:
            raise ConfigError(
                f"solver.method={self.method!r} is not a torchdiffeq method; "
                f"choose one of {sorted(SOLVERS)}"
            )
        if self.adaptive:
            for key in ("rtol", "atol"):
                value = getattr(self, key)
                if value is None or value <= 0:
                    raise ConfigError(f"solver.{key} must be > 0 for {self.method}, got {value}")
        elif self.step_size is not None and self.step_size <= 0:
            raise ConfigError(f"solver.step_size must be > 0, got {self.step_size}")
        if self.max_num_steps <= 0:
            raise ConfigError(f"solver.max_num_steps must be > 0, got {self.max_num_steps}")

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def describe(self) -> str:
        if self.adaptive:
            return f"{self.method} (rtol={self.rtol}, atol={self.atol})"
        step = self.step_size if self.step_size is not None else "output grid"
        return f"{self.method} (step_size={step})"

    def odeint_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for torchdiffeq's odeint."""
        options = dict(self.options)
        kwargs: dict[str, Any] = {"method": self.method}
        if self.adaptive:
            kwargs.update(rtol=self.rtol, atol=self.atol)
            if self.method != "scipy_solver":  # scipy's solvers take no step cap (it warned)
                options.setdefault("max_num_steps", self.max_num_steps)
        elif self.step_size is not None:
            options.setdefault("step_size", self.step_size)
        kwargs["options"] = options
        return kwargs


@dataclass(frozen=True)
class Sensitivity:
    """How gradients flow through a solve.

    Args:
        method: "direct" back-propagates through the solver's operations (memory
            grows with the number of steps); "adjoint" solves the adjoint ODE
            backwards in time (constant memory, extra function evaluations).
        rtol: adjoint solve relative tolerance; None reuses the forward solver's.
        atol: adjoint solve absolute tolerance; None reuses the forward solver's.
        adjoint_method: solver for the adjoint ODE; None reuses the forward method.
        seminorm: measure the adjoint error on the state and its adjoint only,
            not on the parameter gradients (Kidger et al. 2021): fewer steps.
    """

    method: Literal["direct", "adjoint"] = "direct"
    rtol: float | None = None
    atol: float | None = None
    adjoint_method: str | None = None
    seminorm: bool = False

    def __post_init__(self) -> None:
        check_args(
            "sensitivity",
            {
                "rtol": positive(nullable=True),
                "atol": positive(nullable=True),
                "seminorm": boolean(),
            },
            vars(self),
        )
        if self.method not in ("direct", "adjoint"):
            raise ConfigError(
                f"sensitivity.method={self.method!r} is unknown; choose 'direct' or 'adjoint'"
            )
        if self.adjoint_method is not None and self.adjoint_method not in SOLVERS:
            raise ConfigError(
                f"sensitivity.adjoint_method={self.adjoint_method!r} is not a torchdiffeq "
                f"method; choose one of {sorted(SOLVERS)}"
            )

    @property
    def adjoint(self) -> bool:
        return self.method == "adjoint"

    def odeint_adjoint_kwargs(self, solver: Solver) -> dict[str, Any]:
        """Extra keyword arguments for torchdiffeq's odeint_adjoint."""
        method = self.adjoint_method or solver.method
        adjoint_solver = Solver(
            method=method,
            rtol=self.rtol if self.rtol is not None else solver.rtol,
            atol=self.atol if self.atol is not None else solver.atol,
            step_size=solver.step_size,
            max_num_steps=solver.max_num_steps,
            # The same method keeps its options (scipy_solver's `solver: Radau`); another
            # method's options would not apply to it.
            options=dict(solver.options) if method == solver.method else {},
        )
        kwargs = adjoint_solver.odeint_kwargs()
        options = kwargs.pop("options")
        if self.seminorm:
            options["norm"] = "seminorm"
        return {
            "adjoint_method": kwargs["method"],
            "adjoint_rtol": kwargs.get("rtol", 1e-7),
            "adjoint_atol": kwargs.get("atol", 1e-9),
            "adjoint_options": options,
        }

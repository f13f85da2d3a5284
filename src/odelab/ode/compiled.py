"""Fast-path settings checked when a block is built, and the compiled vector field."""

from __future__ import annotations

from typing import Any

from torch import nn

from odelab.errors import ConfigError


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

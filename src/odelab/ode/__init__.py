"""odelab's ODE core: every solve in the project goes through `ODEBlock`."""

from odelab.ode.block import CountedField, ODEBlock, SolveStats, odesolve
from odelab.ode.config import ADAPTIVE_METHODS, Sensitivity, Solver

__all__ = [
    "ADAPTIVE_METHODS",
    "CountedField",
    "ODEBlock",
    "Sensitivity",
    "Solver",
    "SolveStats",
    "odesolve",
]

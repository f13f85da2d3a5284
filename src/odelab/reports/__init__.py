"""Reproduction reports, one per paper result (`make reproduce-<name> budget=...`): a module
here defines a `Reproduction` (see `spiral.py`), listed in `REPRODUCTIONS`."""

from __future__ import annotations

from odelab.reports.base import JobResult, Reproduction, load_jobs, load_sweeps
from odelab.reports.cnf import CNF
from odelab.reports.dissecting import DISSECTING
from odelab.reports.dynamics import DYNAMICS
from odelab.reports.formula import FORMULA
from odelab.reports.latent import LATENT
from odelab.reports.mnist import MNIST
from odelab.reports.robust import ROBUST
from odelab.reports.speed import SPEED
from odelab.reports.spiral import SPIRAL

REPRODUCTIONS: dict[str, Reproduction] = {
    r.name: r for r in (SPIRAL, MNIST, CNF, ROBUST, DISSECTING, LATENT, SPEED, FORMULA, DYNAMICS)
}

__all__ = ["REPRODUCTIONS", "JobResult", "Reproduction", "load_jobs", "load_sweeps"]

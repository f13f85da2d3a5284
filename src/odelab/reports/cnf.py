"""The CNF reproduction (`make reproduce-cnf`); every budget renders through `cnf_cpu.build`."""

from __future__ import annotations

from odelab.reports.base import Reproduction
from odelab.reports.cnf_cpu import build

CNF = Reproduction.from_conf(
    "cnf", "CNF vs planar flow and RNODE regularizers on toy 2D densities", build
)


def nfe_per_step(metrics: dict[str, float]) -> float:
    """Forward plus backward evaluations per training step in the last epoch (bench_cnf.py)."""
    backward = metrics.get("train/nfe_backward_epoch", 0.0)
    return metrics.get("train/nfe_forward_epoch", float("nan")) + backward

"""The CNF reproduction (`make reproduce-cnf`): toy 2D densities, FFJORD standard and RNODE.

Every budget of `conf/reproduce/cnf.yaml` renders through `cnf_cpu.build`; the sections are the
budget's sweep tags, the claims those of `conf/claims/grathwohl2019.yaml` and `chen2018.yaml`.
"""

from __future__ import annotations

from odelab.reports.base import Reproduction
from odelab.reports.cnf_cpu import build

CNF = Reproduction.from_conf(
    "cnf", "CNF vs planar flow and RNODE regularizers on toy 2D densities", build
)


def nfe_per_step(metrics: dict[str, float]) -> float:
    """Forward plus backward evaluations per training step, averaged over the last epoch
    (used by `experiments/bench_cnf.py`)."""
    forward = metrics.get("train/nfe_forward_epoch", float("nan"))
    return forward + metrics.get("train/nfe_backward_epoch", 0.0)

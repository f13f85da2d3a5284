"""Which process of a distributed run this is, importable from anywhere in odelab.

It sits below `sweeps` and `checkpoints` (and imports nothing of odelab) so both can ask
"am I rank zero?" without one importing the other.
"""

from __future__ import annotations

import os

# Launchers set different ones (torchrun: RANK/LOCAL_RANK, SLURM: SLURM_PROCID, Lightning's
# multi-node: NODE_RANK); a process is rank zero only when every one it has says 0.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")


def is_rank_zero() -> bool:
    """True outside distributed runs and in the global rank-zero process of one."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)

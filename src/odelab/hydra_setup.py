"""Hydra/OmegaConf resolvers that odelab's configs use."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout that holds `conf/` (the package is installed in editable mode)."""
    for parent in PACKAGE_DIR.parents:
        if (parent / "conf" / "run.yaml").is_file():
            return parent
    return Path.cwd()


def run_group(name: str) -> str:
    """`name` for a single run; `name-<sweep folder>` for a job of a multirun.

    Used as the W&B group, so the jobs of one sweep sit together in the W&B UI.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return name
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.get("mode") != RunMode.MULTIRUN:
        return name
    return f"{name}-{Path(str(hydra_cfg.sweep.dir)).name}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("odelab_root"):
        OmegaConf.register_new_resolver("odelab_root", lambda: str(repo_root()))
    if not OmegaConf.has_resolver("mul"):
        # `${mul:${trainer.max_epochs},${data.batches_per_epoch}}`: schedule lengths in steps.
        OmegaConf.register_new_resolver("mul", lambda *factors: math.prod(factors))
    if not OmegaConf.has_resolver("odelab_run_group"):
        OmegaConf.register_new_resolver("odelab_run_group", run_group)


CONFIG_DIR = repo_root() / "conf"

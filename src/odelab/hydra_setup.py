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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("odelab_root"):
        OmegaConf.register_new_resolver("odelab_root", lambda: str(repo_root()))
    if not OmegaConf.has_resolver("mul"):
        # `${mul:${trainer.max_epochs},${data.batches_per_epoch}}`: schedule lengths in steps.
        OmegaConf.register_new_resolver("mul", lambda *factors: math.prod(factors))


CONFIG_DIR = repo_root() / "conf"

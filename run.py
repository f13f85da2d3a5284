"""The single entry point: `python run.py experiment=<name> [overrides]`."""

from __future__ import annotations

import logging
import math
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from odelab.errors import OdelabError
from odelab.hydra_setup import register_resolvers

register_resolvers()
log = logging.getLogger("odelab")


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    from odelab.train import objective, run  # heavy imports after argument parsing

    try:
        metrics = run(cfg)
    except OdelabError as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return math.nan  # one failed job must not end the sweep
        sys.exit(2)
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()

"""The single entry point: `python run.py experiment=<name> [overrides]`."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from odelab.errors import OdelabError
from odelab.hydra_setup import register_resolvers
from odelab.sweeps import check_multirun_strategy, job_failed

register_resolvers()
log = logging.getLogger("odelab")


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    from odelab.train import objective, run  # heavy imports after argument parsing

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if multirun:
            check_multirun_strategy(cfg)
        metrics = run(cfg)
    except Exception as err:
        if multirun:
            return job_failed(err)  # NaN: one failed job must not end the sweep
        if not isinstance(err, OdelabError):
            raise
        log.error("%s", err)
        sys.exit(2)
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()

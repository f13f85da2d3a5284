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
# Set when Hydra hands the composed config to `main`: errors before that are bad overrides.
_job_started = False


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    from odelab.train import objective, run  # heavy imports after argument parsing

    global _job_started
    _job_started = True
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
    try:
        main()
    except SystemExit as exit_:
        # Hydra reports an unknown option or key, or an override it cannot parse,
        # without a traceback and exits with 1 before any job starts; like every
        # other bad input that is a usage error: status 2.
        if exit_.code == 1 and not _job_started:
            sys.exit(2)
        raise

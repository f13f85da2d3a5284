"""Every experiment config composes and runs a few batches on CPU."""

from __future__ import annotations

import math

import pytest
from omegaconf import open_dict

from odelab.hydra_setup import CONFIG_DIR
from odelab.train import run

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# fast_dev_run checks that the pieces fit together, not the numbers: small
# batches keep each experiment to seconds (image ODE nets cost ~1 s per 128 images).
SMALL_BATCH = 16


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(make_cfg, experiment: str) -> None:
    # Robertson diverges under explicit dopri5 on raw data by design (the stiff study counts
    # it); Kim et al.'s scaling is the route that trains.
    extra = ["data.scale=true"] if experiment == "dynamics_robertson" else []
    cfg = make_cfg(f"experiment={experiment}", "trainer.fast_dev_run=true", *extra)
    with open_dict(cfg):
        for key in ("batch_size", "eval_batch_size"):
            if key in cfg.data:
                cfg.data[key] = min(cfg.data[key], SMALL_BATCH)
    metrics = run(cfg)
    # The metric sweeps select on is logged by validation, and the test loop scored something.
    assert cfg.optimized_metric in metrics, f"{experiment} never logged {cfg.optimized_metric}"
    assert any(k.startswith("test/") for k in metrics), f"{experiment} logged no test metric"
    assert not any(math.isnan(v) for v in metrics.values()), f"NaN metric in {metrics}"

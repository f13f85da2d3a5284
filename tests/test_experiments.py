"""Every experiment config composes and runs a few batches on CPU."""

from __future__ import annotations

import pytest

from odelab.hydra_setup import CONFIG_DIR
from odelab.train import run

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}", "trainer.fast_dev_run=true")
    metrics = run(cfg)
    assert metrics, f"{experiment} logged no metrics"
    assert all(v == v for v in metrics.values()), f"NaN metric in {metrics}"

"""Every experiment runs a few batches on a CUDA device: `pytest -m gpu` (skipped without one).

Catches what CPU runs cannot: tensors made on the wrong device, host syncs
that break, and the GPU branch of the memory and timing callbacks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from odelab.harness import compose
from odelab.hydra_setup import CONFIG_DIR
from odelab.train import run

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GPU = ["trainer=gpu", "trainer.fast_dev_run=true"]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_on_gpu(tmp_path: Path, experiment: str) -> None:
    cfg = compose(
        [*GPU, f"experiment={experiment}"], tmp_path, logger="none", log_dir=tmp_path / "logs"
    )
    with open_dict(cfg):
        for key in ("batch_size", "eval_batch_size"):
            if key in cfg.data:
                cfg.data[key] = min(cfg.data[key], 64)
    metrics = run(cfg)
    assert metrics, f"{experiment} logged no metrics"
    assert not any(math.isnan(v) for v in metrics.values()), f"NaN metric in {metrics}"
    device = (tmp_path / "device.json").read_text()
    assert '"cuda"' in device, f"{experiment} did not run on the GPU: {device}"

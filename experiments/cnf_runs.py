"""Run odelab experiments in-process, as `python run.py <overrides>` would, for the CNF scripts."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from omegaconf import DictConfig

from odelab.hydra_setup import compose_run_config
from odelab.train import run

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python run.py <overrides>` would build, writing into `output_dir`."""
    return compose_run_config(QUIET + overrides, output_dir)


def run_experiment(overrides: list[str], output_dir: Path) -> tuple[dict[str, float], float]:
    """Train and test one configuration; returns its metrics and wall time in seconds."""
    cfg = compose_config(overrides, output_dir)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = run(cfg)
    return metrics, time.perf_counter() - start


def nfe_per_step(metrics: dict[str, float]) -> float:
    """Forward plus backward evaluations per training step, averaged over the last epoch."""
    return metrics.get("train/nfe_forward_epoch", 0.0) + metrics.get("train/nfe_backward_epoch", 0.0)

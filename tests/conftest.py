"""Shared fixtures: compose the real Hydra config, shrunk to run in seconds."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from odelab.harness import compose
from odelab.hydra_setup import register_resolvers

register_resolvers()

# Under pytest-xdist (`make test` runs two workers) each worker computes on one thread: two
# workers of two torch threads each would oversubscribe a 2-core machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def compose_config(overrides: list[str], output_dir: Path, logger: str = "none") -> DictConfig:
    """The config `python run.py <overrides>` would see on a CPU, quiet, without a logger
    (`logger="csv"`: with the per-epoch history the run reader reads), writing into
    `output_dir`."""
    return compose(
        ["trainer=cpu", *overrides], output_dir, logger=logger, log_dir=output_dir / "logs"
    )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, subdir: str = "run", logger: str = "none") -> DictConfig:
        return compose_config(list(overrides), tmp_path / subdir, logger)

    return _make

"""Shared fixtures: compose the real Hydra config, shrunk to run in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from odelab.hydra_setup import compose_run_config, register_resolvers

register_resolvers()

# Keeps every test run small, quiet and inside tmp_path.
FAST = [
    "logger=none",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python run.py <overrides>` would see, writing into `output_dir`."""
    return compose_run_config(FAST + overrides, output_dir, log_dir=output_dir / "logs")


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, subdir: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / subdir)

    return _make

"""Shared fixtures: compose the real Hydra config, shrunk to run in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from odelab.hydra_setup import CONFIG_DIR, register_resolvers

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
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=FAST + overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, subdir: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / subdir)

    return _make

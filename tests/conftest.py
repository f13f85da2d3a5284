"""Shared fixtures: compose the real Hydra config, shrunk to run in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from odelab.harness import compose
from odelab.hydra_setup import register_resolvers

register_resolvers()


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python run.py <overrides>` would see on a CPU, quiet, without a logger,
    writing into `output_dir`."""
    return compose(
        ["trainer=cpu", *overrides], output_dir, logger="none", log_dir=output_dir / "logs"
    )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, subdir: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / subdir)

    return _make

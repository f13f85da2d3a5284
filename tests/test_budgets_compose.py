"""Every sweep of every reproduction budget composes into a valid config: a typo in a budget
that has not been run yet fails here, not hours into a background study."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import compose_config
from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR
from odelab.validate import validate


def first_job(sweep: list[str]) -> list[str]:
    """The overrides of a sweep's first job: each sweep override at its first value."""
    parser = OverridesParser.create()
    out = []
    for override in parser.parse_overrides([str(o) for o in sweep]):
        key = override.get_key_element()
        if key.startswith(("hydra.", "hydra/")):
            continue  # launcher settings: not part of the job's config
        value = (
            next(iter(override.sweep_string_iterator()))
            if override.is_sweep_override()
            else (override.get_value_element_as_str())
        )
        out.append(f"{key}={value}")
    return out


def budget_sweeps() -> list[tuple[str, str, int, list[str]]]:
    cases = []
    for path in sorted((Path(CONFIG_DIR) / "reproduce").glob("*.yaml")):
        for budget, entry in (yaml.safe_load(path.read_text()) or {}).items():
            for i, sweep in enumerate(entry.get("sweeps") or []):
                cases.append((path.stem, budget, i, sweep))
    return cases


CASES = budget_sweeps()


@pytest.mark.parametrize(
    ("name", "budget", "i", "sweep"), CASES, ids=[f"{n}-{b}-{i}" for n, b, i, _ in CASES]
)
def test_every_budget_sweep_composes(name, budget, i, sweep, tmp_path: Path) -> None:
    cfg = compose_config(first_job(sweep), tmp_path)
    ckpt = OmegaConf.select(cfg, "ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        # A budget that tests another budget's checkpoints (kept in logs/, never committed): on
        # a machine without them it must stop with the one-line error naming the key.
        with pytest.raises(ConfigError, match="ckpt_path"):
            validate(cfg, data=False)
        return
    if OmegaConf.select(cfg, "trainer.accelerator") in ("gpu", "cuda"):
        # A GPU budget is checked for what it asks, not refused for the GPU this host lacks.
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 1
    validate(cfg, data=False)

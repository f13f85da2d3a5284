"""data=hopper: MuJoCo Hopper trajectories simulated with dm_control, cached on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from odelab.data import hopper
from odelab.data.hopper import HopperDataModule, min_max_scale
from odelab.errors import ConfigError
from odelab.train import run


def _dm(tmp_path: Path, **kwargs: object) -> HopperDataModule:
    settings = dict(n_train=3, n_val=1, n_test=1, steps=12, cache_dir=str(tmp_path), batch_size=3)
    settings.update(n_observed=4, n_future=None)
    dm = HopperDataModule(**{**settings, **kwargs})
    dm.setup()
    return dm


def test_missing_dm_control_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_dm_control(name: str, *args: object, **kwargs: object):
        if name.startswith("dm_control"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dm_control)
    with pytest.raises(ConfigError, match=r"\.\[hopper\]"):
        _dm(tmp_path)


def test_min_max_scale_maps_each_channel_to_unit_interval() -> None:
    data = torch.tensor([[[0.0, 5.0, 2.0]], [[4.0, 7.0, 2.0]]])
    scaled = min_max_scale(data)
    assert torch.equal(scaled[:, 0, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(scaled[:, 0, 1], torch.tensor([0.0, 1.0]))
    assert torch.equal(scaled[:, 0, 2], torch.zeros(2))  # a constant channel


def test_simulated_trajectories_move_and_are_cached(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("dm_control")
    raw = hopper.hopper_trajectories(3, 12, 123, tmp_path)
    assert raw.shape == (3, 12, 14)
    # The reference's start: root x/z positions in [0, 0.5], joints in [-2, 2], |v| <= 5.
    assert bool(((raw[:, 0, :2] >= 0) & (raw[:, 0, :2] <= 0.5)).all())
    assert bool((raw[:, 0, 2:7].abs() <= 2).all()) and bool((raw[:, 0, 7:].abs() <= 5).all())
    # The physics steps: every trajectory moves, and the trajectories differ.
    assert bool(((raw[:, 1:] - raw[:, :1]).abs().amax((1, 2)) > 1e-3).all())
    assert not torch.allclose(raw[0], raw[1])
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta == {"generator": "hopper-stand-v1", "n": 3, "steps": 12, "seed": 123}

    def never(*args: object) -> None:
        raise AssertionError("simulated again despite the cache")

    monkeypatch.setattr(hopper, "simulate_hopper", never)
    assert torch.equal(hopper.hopper_trajectories(3, 12, 123, tmp_path), raw)
    with pytest.raises(AssertionError, match="simulated again"):
        hopper.hopper_trajectories(3, 12, 124, tmp_path)  # other settings: not the cache


def test_hopper_splits_and_a_latent_ode_batch(tmp_path: Path, make_cfg) -> None:
    pytest.importorskip("dm_control")
    dm = _dm(tmp_path)
    split = dm.splits["train"]
    assert split.values.shape == (3, 12, 14) and float(split.values.max()) <= 1.0
    assert torch.equal(split.t, torch.arange(12) / 12)
    assert (split.context.sum(1) + split.interp.sum(1) == 4).all()
    overrides = [
        "experiment=latent_ode",
        "data=hopper",
        f"data.cache_dir={tmp_path}",
        "data.steps=12",
        "data.n_train=3",
        "data.n_val=1",
        "data.n_test=1",
        "data.n_observed=4",
        "data.batch_size=3",
        "model.input_dim=14",
        "model.latent_dim=4",
        "trainer.fast_dev_run=true",
    ]
    metrics = run(make_cfg(*overrides))
    assert math.isfinite(metrics["test/extrap_mse"])

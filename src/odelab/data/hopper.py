"""MuJoCo Hopper trajectories (Rubanova et al. 2019, Table 3), simulated with dm_control.

The generator follows the reference code (YuliaRubanova/latent_ode, `mujoco_physics.py`,
`HopperPhysics._generate_random_trajectories`): the `hopper` model of the control suite,
its first two positions drawn from U[0, 0.5], the other positions from U[-2, 2] and every
velocity from U[-5, 5], so that the hopper starts in the air, rotates and falls; each
trajectory records the 7 positions and 7 velocities (14 channels) before each of `steps`
physics steps. The whole set is min-max scaled per channel to [0, 1] (the reference's
`utils.normalize_data`) and its times are `arange(steps) / steps` (`parse_datasets.py`).
Trajectories are cached on disk with their generator settings; a cache made with other
settings is never read.

The reference simulates 200 steps and keeps 10,000 trajectories, 80 % for training; here
`steps` (100 by default, the paper's length) and the split sizes are settings. Needs the
optional extra: `pip install -e '.[hopper]'`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from odelab.data.irregular import IrregularSeriesDataModule
from odelab.errors import ConfigError

STATE_DIM = 14
INSTALL = "pip install -e '.[hopper]' (dm-control and mujoco)"


def simulate_hopper(n: int, steps: int, seed: int) -> np.ndarray:
    """(n, steps, 14) positions and velocities of random Hopper trajectories (see the module)."""
    # Physics only, never a rendering: without this dm_control opens GLFW and warns, on a
    # machine without a display, that X11 is missing.
    os.environ.setdefault("MUJOCO_GL", "disable")
    try:
        from dm_control import suite
    except ImportError as err:
        raise ConfigError(
            f"data=hopper simulates with dm_control, not installed: {INSTALL}"
        ) from err
    physics = suite.load("hopper", "stand").physics
    rng = np.random.RandomState(seed)
    half = STATE_DIM // 2
    out = np.zeros((n, steps, STATE_DIM))
    for i in range(n):
        with physics.reset_context():
            physics.data.qpos[:2] = rng.uniform(0, 0.5, size=2)
            physics.data.qpos[2:] = rng.uniform(-2, 2, size=physics.data.qpos[2:].shape)
            physics.data.qvel[:] = rng.uniform(-5, 5, size=physics.data.qvel.shape)
        for t in range(steps):
            out[i, t, :half] = physics.data.qpos
            out[i, t, half:] = physics.data.qvel
            physics.step()
    return out


def hopper_trajectories(n: int, steps: int, seed: int, cache_dir: Path) -> Tensor:
    """The simulated set as float32 (n, steps, 14), from the cache when its settings match."""
    settings = {"generator": "hopper-stand-v1", "n": n, "steps": steps, "seed": seed}
    stem = cache_dir / f"hopper_n{n}_steps{steps}_seed{seed}"
    data_file, meta_file = stem.with_suffix(".pt"), stem.with_suffix(".json")
    if data_file.is_file() and meta_file.is_file():
        if json.loads(meta_file.read_text()) == settings:
            return torch.load(data_file, weights_only=True)
    data = torch.from_numpy(simulate_hopper(n, steps, seed)).float()
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(data, data_file)
    meta_file.write_text(json.dumps(settings, indent=1) + "\n")
    return data


def min_max_scale(data: Tensor) -> Tensor:
    """Each channel scaled to [0, 1] over the whole set (constant channels left at 0)."""
    flat = data.reshape(-1, data.shape[-1])
    lo, hi = flat.min(0).values, flat.max(0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (data - lo) / span


class HopperDataModule(IrregularSeriesDataModule):
    """Hopper trajectories as irregular series: random observed points, a future window.

    Args:
        n_train, n_val, n_test: trajectories per split (consecutive blocks of one simulated
            set of `n_train + n_val + n_test`).
        steps: physics steps (time points) per trajectory.
        sim_seed: seed of the simulation (the reference's is 123).
        cache_dir: where the simulated set is cached.
        t_observed: end of the observation window in the times `arange(steps) / steps`.
        Other arguments: see `IrregularSeriesDataModule`.
    """

    def __init__(
        self,
        n_train: int = 800,
        n_val: int = 100,
        n_test: int = 100,
        steps: int = 100,
        sim_seed: int = 123,
        cache_dir: str = "data/hopper",
        t_observed: float = 0.5,
        n_observed: int | None = None,
        **kwargs: object,
    ):
        super().__init__(t_observed=t_observed, n_observed=n_observed, **kwargs)
        for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if n < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {n}")
        if steps < 3:
            raise ConfigError(f"data.steps must be >= 3, got {steps}")
        if not 0 < t_observed < 1:
            raise ConfigError(f"data.t_observed must be in (0, 1), got {t_observed}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.steps, self.sim_seed, self.cache_dir = steps, sim_seed, Path(cache_dir)
        self._data: Tensor | None = None

    def grid(self) -> Tensor:
        return torch.arange(self.steps, dtype=torch.float32) / self.steps

    def dense_split(self, split: str, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if self._data is None:
            total = sum(self.sizes.values())
            raw = hopper_trajectories(total, self.steps, self.sim_seed, self.cache_dir)
            self._data = min_max_scale(raw)
        start = {"train": 0, "val": self.sizes["train"]}.get(
            split, self.sizes["train"] + self.sizes["val"]
        )
        values = self._data[start : start + self.sizes[split]]
        return values, values

"""Several trajectories of a known system for the dynamics study (issue 42): training, held-out
and future-window data from many initial conditions, with observation noise and sparse
irregular sampling, served whole or as multiple-shooting windows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from odelab.data.loading import loader_options
from odelab.data.trajectories import (
    RandomWindowSampler,
    already_batched,
    cached_truth,
    field_grid,
)
from odelab.errors import ConfigError
from odelab.systems import time_scale


@dataclass
class TrajectorySet:
    """Several trajectories on one time grid, in the coordinates the model learns in.

    With `data.scale=true` these are scaled coordinates (state / `unit`, time / `t_unit`);
    `unit` converts a state error back to the system's own units.
    """

    t: Tensor  # (N,)
    true: Tensor  # (N, K, D) noise-free
    observed: Tensor  # (n_train, K, D) noisy; dropped points hold interpolated values
    mask: Tensor  # (n_train, K) True where a point is observed
    n_train: int
    grid: Tensor  # (G, D) where the learned and the true field are compared
    grid_field: Tensor  # (G, D)
    unit: Tensor  # (D,) original units per scaled unit
    state_scale: Tensor  # (D,) std of the true training states, original units


class ShootingWindows(Dataset):
    """Windows of `length` grid points of the training trajectories; item = (traj, start)."""

    def __init__(self, data: TrajectorySet, length: int):
        self.data, self.length = data, length
        self.t_window = data.t[:length] - data.t[0]
        self.offsets = torch.arange(length)
        self.n_starts = data.n_train - length + 1

    def __len__(self) -> int:
        return self.data.observed.shape[1] * self.n_starts

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return self.__getitems__([i])

    def __getitems__(self, items: Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(items)
        traj, start = index // self.n_starts, index % self.n_starts
        rows = start[:, None] + self.offsets  # (B, T)
        windows = self.data.observed[rows, traj[:, None]].transpose(0, 1)  # (T, B, D)
        mask = self.data.mask[rows, traj[:, None]].transpose(0, 1)  # (T, B)
        return self.t_window, windows, mask, traj, start


class DynamicsDataModule(L.LightningDataModule):
    """Trajectories of a known system from several initial conditions (issue 42).

    Training, validation and test trajectories start from different initial conditions
    drawn uniformly from the box `y0 +- ic_box`; validation and test score held-out
    initial conditions. Observations on the first `n_points` of the grid carry Gaussian
    noise of std `noise_frac` x the state's scale (std of the true training states, per
    component) and, with `keep_frac < 1`, only a random subset of the points survives, a
    different one per trajectory (the first point always, so each trajectory has a start).
    The grid continues noise-free to `extrapolate_to` (the extrapolation window).

    Args:
        system: the true field.
        y0: centre of the initial-condition box.
        ic_box: half-widths of the box per component (0: all trajectories start at y0).
        n_train_traj, n_val_traj, n_test_traj: trajectories per split.
        t_end: end of the observed span.
        n_points: grid points on [0, t_end].
        extrapolate_to: end of the scored extrapolation window (>= t_end).
        log_time: log-spaced grid from `t_first` to `t_end` after t = 0 (Robertson; training
            then solves whole trajectories, batch_time = n_points).
        t_first: first positive time of a log-spaced grid.
        scale_time_with_system: stretch t_end and extrapolate_to by
            `odelab.systems.time_scale` (Van der Pol: same cycles at any mu).
        noise_frac: noise std as a fraction of each component's scale.
        noise_std: absolute noise std, added to noise_frac's (the single-trajectory knob).
        keep_frac: fraction of the observed points kept per trajectory.
        scale: Kim et al. 2021's scaling: states divided by each component's range over the
            training data and time by t_end, so every component and the time span are O(1).
        batch_time: grid points per training window.
        batch_size, batches_per_epoch: windows per batch; batches per epoch.
        grid_size: points per axis of the field-comparison grid.
        seed: seeds initial conditions, noise, masks and window draws.
        num_workers, pin_memory, persistent_workers: DataLoader options.
    """

    def __init__(
        self,
        system: nn.Module,
        y0: Sequence[float] = (2.0, 0.0),
        ic_box: Sequence[float] | None = None,
        n_train_traj: int = 8,
        n_val_traj: int = 2,
        n_test_traj: int = 4,
        t_end: float = 25.0,
        n_points: int = 200,
        extrapolate_to: float | None = None,
        log_time: bool = False,
        t_first: float = 1e-5,
        scale_time_with_system: bool = False,
        noise_frac: float = 0.0,
        keep_frac: float = 1.0,
        scale: bool = False,
        batch_time: int = 5,
        batch_size: int = 20,
        batches_per_epoch: int = 50,
        grid_size: int = 21,
        seed: int = 0,
        noise_std: float = 0.0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        if noise_std < 0:
            raise ConfigError(f"data.noise_std must be >= 0, got {noise_std}")
        if batch_size < 1 or batches_per_epoch < 1:
            raise ConfigError("data.batch_size and data.batches_per_epoch must be >= 1")
        if not 0.0 <= noise_frac:
            raise ConfigError(f"data.noise_frac must be >= 0 (0.05 = 5 % noise), got {noise_frac}")
        if not 0.0 < keep_frac <= 1.0:
            raise ConfigError(f"data.keep_frac must be in (0, 1] (1.0 = dense), got {keep_frac}")
        if min(n_train_traj, n_val_traj, n_test_traj) < 1:
            raise ConfigError("data.n_train_traj, n_val_traj and n_test_traj must be >= 1")
        if n_points < 2 or not t_end > 0:
            raise ConfigError(f"data.n_points must be >= 2 and data.t_end > 0, got {n_points}")
        if not 2 <= batch_time <= n_points:
            raise ConfigError(f"data.batch_time must be in [2, data.n_points={n_points}]")
        if log_time and batch_time != n_points:
            raise ConfigError(
                f"data.batch_time={batch_time} with data.log_time=true: windows of a log grid "
                f"have different time spans; set data.batch_time={n_points} (whole trajectories)"
            )
        if extrapolate_to is not None and extrapolate_to < t_end:
            raise ConfigError(f"data.extrapolate_to must be >= data.t_end={t_end}")
        ic_box = [0.0] * len(y0) if ic_box is None else list(ic_box)
        if len(ic_box) != len(y0):
            raise ConfigError(f"data.ic_box needs one half-width per component of data.y0={y0}")
        self.system, self.y0, self.ic_box = system, torch.tensor(y0), torch.tensor(ic_box)
        self.n_traj = (n_train_traj, n_val_traj, n_test_traj)
        factor = time_scale(system) if scale_time_with_system else 1.0
        self.t_end = float(t_end) * factor
        self.extrapolate_to = float(extrapolate_to if extrapolate_to is not None else t_end)
        self.extrapolate_to *= factor
        self.n_points, self.log_time, self.t_first = n_points, log_time, t_first
        self.noise_frac, self.keep_frac, self.scale = noise_frac, keep_frac, scale
        self.batch_time, self.batch_size = batch_time, batch_size
        self.batches_per_epoch, self.grid_size, self.seed = batches_per_epoch, grid_size, seed
        self.noise_std = noise_std
        # Learned window starts (multiple shooting, model.learn_initial_states=auto) for
        # noisy data, and for sparse data, where a window may start at a dropped point.
        self.needs_learned_starts = noise_frac > 0 or noise_std > 0 or keep_frac < 1
        self.loader_options = loader_options(num_workers, pin_memory, persistent_workers)
        self.splits: dict[str, TrajectorySet] | None = None

    @property
    def trajectory(self) -> TrajectorySet | None:
        """The training set (the task sizes its learned window starts from it)."""
        return None if self.splits is None else self.splits["train"]

    def times(self) -> Tensor:
        """The grid: observed points, then the extrapolation window at the same spacing."""
        if self.log_time:
            lo, hi = math.log10(self.t_first), math.log10(self.t_end)
            step = (hi - lo) / (self.n_points - 2)
            n_extra = round((math.log10(self.extrapolate_to) - hi) / step)
            logs = lo + step * torch.arange(self.n_points - 1 + n_extra, dtype=torch.float64)
            return torch.cat((torch.zeros(1, dtype=torch.float64), 10.0**logs))
        dt = self.t_end / (self.n_points - 1)
        n_extra = round((self.extrapolate_to - self.t_end) / dt)
        return torch.arange(self.n_points + n_extra, dtype=torch.float64) * dt

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self._make_splits()

    @torch.no_grad()
    def _make_splits(self) -> dict[str, TrajectorySet]:
        gen = torch.Generator().manual_seed(self.seed)
        t = self.times()
        n = self.n_points
        truths = {}
        for name, k in zip(("train", "val", "test"), self.n_traj, strict=True):
            u = 2 * torch.rand(k, len(self.y0), generator=gen, dtype=torch.float64) - 1
            truths[name] = cached_truth(self.system, self.y0.double() + u * self.ic_box, t)
        train = truths["train"][:n].reshape(-1, len(self.y0))
        state_scale = train.std(0).clamp_min(1e-12)
        span = train.max(0).values - train.min(0).values
        unit = span.clamp_min(1e-12) if self.scale else torch.ones_like(span)
        t_unit = self.t_end if self.scale else 1.0
        dtype = torch.get_default_dtype()
        grid = field_grid(train / unit, self.grid_size)
        field = copy.deepcopy(self.system).double()
        grid_field = field(torch.zeros((), dtype=torch.float64), grid * unit) * t_unit / unit
        splits = {}
        for name, true in truths.items():
            k = true.shape[1]
            noise = torch.randn(n, k, len(self.y0), generator=gen, dtype=torch.float64)
            observed = true[:n] + (self.noise_frac * state_scale + self.noise_std) * noise
            mask = torch.rand(n, k, generator=gen) < self.keep_frac
            mask[0] = True
            observed = _fill_dropped(t[:n], observed, mask)
            splits[name] = TrajectorySet(
                t=(t / t_unit).to(dtype),
                true=(true / unit).to(dtype),
                observed=(observed / unit).to(dtype),
                mask=mask,
                n_train=n,
                grid=grid.to(dtype),
                grid_field=grid_field.to(dtype),
                unit=unit.to(dtype),
                state_scale=state_scale.to(dtype),
            )
        return splits

    def train_dataloader(self) -> DataLoader:
        dataset = ShootingWindows(self.splits["train"], self.batch_time)
        sampler = RandomWindowSampler(
            len(dataset), self.batch_size * self.batches_per_epoch, self.seed
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=self.batch_size,
            collate_fn=already_batched,
            **self.loader_options,
        )

    def _split(self, name: str) -> DataLoader:
        return DataLoader([self.splits[name]], batch_size=None, collate_fn=lambda x: x)

    def val_dataloader(self) -> DataLoader:
        return self._split("val")

    def test_dataloader(self) -> DataLoader:
        return self._split("test")


def _fill_dropped(t: Tensor, observed: Tensor, mask: Tensor) -> Tensor:
    """Replace dropped points by linear interpolation of the kept ones of their trajectory.

    They are never scored; the values only initialise learned window starts, so no
    dropped observation leaks into training.
    """
    import numpy as np

    out = observed.clone()
    tt = t.numpy()
    for k in range(observed.shape[1]):
        keep = mask[:, k].numpy()
        for d in range(observed.shape[2]):
            out[:, k, d] = torch.from_numpy(np.interp(tt, tt[keep], observed[keep, k, d].numpy()))
    return out

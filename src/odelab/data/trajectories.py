"""Noisy observations of a known dynamical system, served as random windows.

The true trajectory is integrated once with a tight-tolerance solver, observed
with Gaussian noise on [0, t_end], and kept noise-free up to `extrapolate_to`
so that a model can be scored beyond the span it was trained on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from odelab.data.loading import loader_options
from odelab.errors import ConfigError, SolverError
from odelab.ode import Solver, odesolve

# The reference trajectory must be far more accurate than anything a model learns.
TRUTH_SOLVER = Solver(method="dopri5", rtol=1e-9, atol=1e-10, max_num_steps=1_000_000, max_nfe=None)


def field_grid(points: Tensor, size: int) -> Tensor:
    """A `size`-per-axis grid over the points' bounding box padded by a tenth on each side,
    flattened to (size**dim, dim): where the phase portraits draw the true and learned fields."""
    lo, hi = points.min(0).values, points.max(0).values
    pad = 0.1 * (hi - lo)
    axes = [
        torch.linspace(a, b, size, dtype=points.dtype)
        for a, b in zip(lo - pad, hi + pad, strict=True)
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="xy"), dim=-1).reshape(-1, len(axes))


@dataclass
class Trajectory:
    """One trajectory on a uniform grid; the first `n_train` points are observed."""

    t: Tensor  # (N,)
    true: Tensor  # (N, D)
    observed: Tensor  # (n_train, D), true + noise
    n_train: int
    grid: Tensor  # (G, D) points where vector fields are compared
    grid_field: Tensor  # (G, D) true field on the grid


class WindowDataset(Dataset):
    """Windows of `length` consecutive observations; item i starts at index i.

    `__getitems__` gathers a whole batch in one indexing op instead of one
    Python call per window. `set_length` changes the window length between
    epochs (curriculum).
    """

    def __init__(self, t: Tensor, observed: Tensor, length: int):
        self.t, self.observed = t, observed
        self.set_length(length)

    def set_length(self, length: int) -> None:
        self.t_window = self.t[:length] - self.t[0]
        self.offsets = torch.arange(length)

    def __len__(self) -> int:
        return self.observed.shape[0] - self.offsets.numel() + 1

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.__getitems__([i])

    def __getitems__(self, starts: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        first = torch.as_tensor(starts)
        idx = first[:, None] + self.offsets  # (B, T)
        windows = self.observed[idx].transpose(0, 1)  # (T, B, D)
        return self.t_window, windows, first


def window_length(epoch: int, start: int, final: int | None, growth_epochs: int) -> int:
    """Window length at `epoch`: grows linearly from `start` to `final` over `growth_epochs`.

    Short windows first keep an early, poorly fitted field from diverging over
    a long solve; longer ones later see drift that short ones barely see.
    """
    if final is None or growth_epochs <= 0 or epoch >= growth_epochs:
        return start if final is None else final
    return round(start + (final - start) * epoch / growth_epochs)


class RandomWindowSampler(Sampler[int]):
    """`num_samples` random window starts, seeded per epoch.

    Lightning calls `set_epoch`, so a run resumed at an epoch boundary draws
    exactly the windows an uninterrupted run would have drawn. It is a plain
    index sampler (batched by the DataLoader), so under DDP Lightning can wrap it
    in a distributed sampler that hands each process its own share of windows.
    With a `dataset` and `lengths(epoch)`, it also sets the epoch's window
    length (curriculum) and draws starts valid for that length.
    """

    def __init__(
        self,
        num_windows: int,
        num_samples: int,
        seed: int,
        dataset: WindowDataset | None = None,
        lengths: Callable[[int], int] | None = None,
    ):
        self.num_windows, self.num_samples = num_windows, num_samples
        self.seed, self.dataset, self.lengths = seed, dataset, lengths
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.dataset is not None and self.lengths is not None:
            self.dataset.set_length(self.lengths(epoch))
            self.num_windows = len(self.dataset)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randint(self.num_windows, (self.num_samples,), generator=gen).tolist()


def already_batched(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class TrajectoryDataModule(L.LightningDataModule):
    """Random windows of a noisy trajectory for training; the whole one for evaluation.

    Args:
        system: the true vector field f(t, y).
        y0: true initial state.
        t_end: end of the observed span [0, t_end].
        n_points: observations on [0, t_end] (uniform grid, endpoints included).
        extrapolate_to: end of the noise-free span used to score extrapolation.
        noise_std: std of the Gaussian noise added to the observations.
        batch_time: observations per training window (at the first epoch).
        batch_time_final: window length reached after `batch_time_growth_epochs`
            epochs of linear growth (curriculum); None keeps `batch_time`.
        batch_time_growth_epochs: epochs over which windows grow.
        batch_size: windows per batch.
        batches_per_epoch: training batches in one epoch.
        grid_size: points per axis of the grid where vector fields are compared.
        seed: seeds the noise and the window draws.
        num_workers: DataLoader worker processes for the training windows (0: load in
            the training process, best for this small in-memory data).
        pin_memory: page-lock batches for faster copies to a GPU.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
    """

    def __init__(
        self,
        system: nn.Module,
        y0: Sequence[float] = (2.0, 0.0),
        t_end: float = 25.0,
        n_points: int = 1000,
        extrapolate_to: float | None = None,
        noise_std: float = 0.0,
        batch_time: int = 10,
        batch_time_final: int | None = None,
        batch_time_growth_epochs: int = 0,
        batch_size: int = 20,
        batches_per_epoch: int = 100,
        grid_size: int = 21,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        if noise_std < 0:
            raise ConfigError(f"data.noise_std must be >= 0, got {noise_std}")
        if not t_end > 0:
            raise ConfigError(
                f"data.t_end must be > 0 (the time span [0, t_end] is empty), got {t_end}"
            )
        if n_points < 2:
            raise ConfigError(f"data.n_points must be >= 2, got {n_points}")
        if extrapolate_to is not None and extrapolate_to < t_end:
            raise ConfigError(
                f"data.extrapolate_to must be >= data.t_end={t_end}, got {extrapolate_to}"
            )
        for key, value in (("batch_time", batch_time), ("batch_time_final", batch_time_final)):
            if value is not None and not 2 <= value <= n_points:
                raise ConfigError(
                    f"data.{key} must be in [2, data.n_points={n_points}], got {value}"
                )
        if batch_size < 1 or batches_per_epoch < 1:
            raise ConfigError("data.batch_size and data.batches_per_epoch must be >= 1")
        if len(y0) == 0:
            raise ConfigError("data.y0=[] is empty; give the initial state, one number a dimension")
        self.system = system
        self.y0 = torch.tensor(y0, dtype=torch.get_default_dtype())
        self.t_end, self.n_points = float(t_end), n_points
        self.extrapolate_to = float(extrapolate_to if extrapolate_to is not None else t_end)
        self.noise_std = noise_std
        self.batch_time, self.batch_size, self.batches_per_epoch = (
            batch_time,
            batch_size,
            batches_per_epoch,
        )
        self.batch_time_final, self.batch_time_growth_epochs = (
            batch_time_final,
            batch_time_growth_epochs,
        )
        self.grid_size, self.seed = grid_size, seed
        self.loader_options = loader_options(num_workers, pin_memory, persistent_workers)
        self.trajectory: Trajectory | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.trajectory is None:
            self.trajectory = self._make_trajectory()

    @torch.no_grad()
    def _make_trajectory(self) -> Trajectory:
        dt = self.t_end / (self.n_points - 1)
        n_extra = round((self.extrapolate_to - self.t_end) / dt)
        t = torch.arange(self.n_points + n_extra, dtype=torch.float64) * dt
        true = odesolve(self.system.double(), self.y0.double(), t, TRUTH_SOLVER, name="data.system")
        self.system.float()
        gen = torch.Generator().manual_seed(self.seed)
        observed = true[: self.n_points] + self.noise_std * torch.randn(
            self.n_points, true.shape[-1], generator=gen, dtype=true.dtype
        )
        grid = field_grid(true[: self.n_points], self.grid_size)
        dtype = torch.get_default_dtype()
        return Trajectory(
            t=t.to(dtype),
            true=true.to(dtype),
            observed=observed.to(dtype),
            n_train=self.n_points,
            grid=grid.to(dtype),
            grid_field=self.system(torch.zeros(()), grid.to(dtype)),
        )

    def train_dataloader(self) -> DataLoader:
        traj = self.trajectory
        dataset = WindowDataset(traj.t[: traj.n_train], traj.observed, self.batch_time)
        lengths = None
        if self.batch_time_final is not None:
            lengths = partial(
                window_length,
                start=self.batch_time,
                final=self.batch_time_final,
                growth_epochs=self.batch_time_growth_epochs,
            )
        sampler = RandomWindowSampler(
            len(dataset), self.batch_size * self.batches_per_epoch, self.seed, dataset, lengths
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=self.batch_size,
            collate_fn=already_batched,
            **self.loader_options,
        )

    def _whole_trajectory(self) -> DataLoader:
        # One batch: the evaluation solves the full span from the true y0.
        return DataLoader([self.trajectory], batch_size=None, collate_fn=lambda x: x)

    def val_dataloader(self) -> DataLoader:
        return self._whole_trajectory()

    def test_dataloader(self) -> DataLoader:
        return self._whole_trajectory()


def truth_solve(
    system: nn.Module, y0: Tensor, t: Tensor, method: str = "Radau", rtol: float = 1e-10
) -> Tensor:
    """Ground truth from scipy's `solve_ivp` in float64: states (N, K, D) at times `t`.

    An implicit method (Radau) at tight tolerance is accurate on the stiff systems too
    (Van der Pol at mu = 1000, Robertson), where dopri5 would need millions of steps.

    Args:
        system: the true field f(t, y) (a torch module, evaluated in float64).
        y0: initial states (K, D).
        t: increasing output times (N,).
        method: a `solve_ivp` method.
        rtol: relative tolerance; atol is 1e-6 rtol (Robertson's y2 is ~1e-5).
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    field = copy.deepcopy(system).double()
    times = t.double().numpy()
    k, d = y0.shape

    # All trajectories as one stacked system, vectorized: scipy then evaluates the field
    # once per call for all of them, and its finite-difference Jacobian in one call too
    # (a torch call costs far more than the arithmetic of these small fields).
    def f(tt: float, y: np.ndarray) -> np.ndarray:
        m = y.shape[1] if y.ndim == 2 else 1
        states = torch.from_numpy(np.ascontiguousarray(y.reshape(k, d, m).transpose(2, 0, 1)))
        with torch.no_grad():
            dy = field(torch.tensor(tt, dtype=torch.float64), states).numpy()
        out = dy.transpose(1, 2, 0).reshape(k * d, m)
        return out if y.ndim == 2 else out[:, 0]

    sol = solve_ivp(
        f,
        (times[0], times[-1]),
        y0.double().numpy().reshape(-1),
        method=method,
        t_eval=times,
        rtol=rtol,
        atol=rtol * 1e-6,
        vectorized=True,
    )
    if not sol.success:
        raise SolverError(f"data.system: the ground-truth solve failed ({sol.message})")
    return torch.from_numpy(np.ascontiguousarray(sol.y.T.reshape(len(times), k, d)))


def cached_truth(system: nn.Module, y0: Tensor, t: Tensor) -> Tensor:
    """`truth_solve`, kept on disk: the routes of a stiff sweep share their ground truth.

    Keyed by the system's class, parameters and buffers, the initial states and the
    times; under `$ODELAB_TRUTH_CACHE` (default ~/.cache/odelab/truth; "off" disables).
    Van der Pol at mu = 1000 takes about a minute of one core for seven trajectories.
    """
    import hashlib
    import os

    root = os.environ.get("ODELAB_TRUTH_CACHE", str(Path.home() / ".cache/odelab/truth"))
    if root == "off":
        return truth_solve(system, y0, t)
    key = hashlib.sha256(type(system).__qualname__.encode())
    key.update(
        repr(sorted((k, v) for k, v in vars(system).items() if not k.startswith("_"))).encode()
    )
    for tensor in [*system.state_dict().values(), y0, t]:
        key.update(tensor.double().numpy().tobytes())
    path = Path(root) / f"{key.hexdigest()[:32]}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    true = truth_solve(system, y0, t)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    torch.save(true, partial)
    partial.replace(path)  # atomic: parallel jobs never read a half-written file
    return true

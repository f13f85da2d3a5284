"""Irregularly sampled time series: noisy periodic signals and a real series.

Every series lives on a common time grid, as in the latent ODE toy data of Rubanova et al.
(2019): each series observes its own random subset of the grid points inside the observation
window `[0, t_observed]`, so observation times differ from series to series, and is scored on
random points of the future window `(t_observed, t_end]` (extrapolation). A fraction of each
series' observation-window points is held out from the encoder and scored too (interpolation).

A batch is solved on the union of its series' times (`IrregularBatch`): every
tensor has one column per time that at least one series of the batch has, and
masks say which series has which point. The grid bounds the union (at most
`grid_size` columns however large the batch); without it every series would add
its own times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from odelab.data.loading import SplitLoaders
from odelab.errors import ConfigError


@dataclass
class IrregularBatch:
    """Series of one batch on the union of their times (B series, T union times, D channels).

    `times[0]` is always the start of the grid (the time of the latent initial state);
    a column holds no point of a series unless one of its masks says so.
    """

    times: Tensor  # (T,) increasing
    values: Tensor  # (B, T, D) noisy observations, zero where a series has no point
    truth: Tensor  # (B, T, D) noise-free values where known (else the observations)
    context: Tensor  # (B, T) bool: points the encoder sees
    interp: Tensor  # (B, T) bool: held-out points inside the observation window
    extrap: Tensor  # (B, T) bool: points of the future window
    query: Tensor  # (B, T) bool: points the model predicts (targets, or the whole grid for plots)
    index: Tensor  # (B,) series numbers in their split

    @property
    def target(self) -> Tensor:
        """Every point a series has: what the training likelihood is scored on."""
        return self.context | self.interp | self.extrap

    def __len__(self) -> int:
        return self.values.shape[0]

    def select(self, rows: Sequence[int] | Tensor) -> IrregularBatch:
        """The given series alone, on the union of their own times."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.values.device)
        sub = replace(
            self,
            values=self.values[rows],
            truth=self.truth[rows],
            context=self.context[rows],
            interp=self.interp[rows],
            extrap=self.extrap[rows],
            query=self.query[rows],
            index=self.index[rows],
        )
        keep = (sub.target | sub.query).any(0)
        keep[0] = True
        cols = keep.nonzero().squeeze(1)
        return replace(
            sub,
            times=sub.times[cols],
            values=sub.values[:, cols],
            truth=sub.truth[:, cols],
            context=sub.context[:, cols],
            interp=sub.interp[:, cols],
            extrap=sub.extrap[:, cols],
            query=sub.query[:, cols],
        )


class IrregularSeries(Dataset):
    """Series on a grid with per-series masks; `__getitems__` builds a whole union batch.

    Args:
        t: (G,) the grid.
        values: (N, G, D) noisy values on the grid.
        truth: (N, G, D) noise-free values (the same tensor for real data).
        context, interp, extrap: (N, G) bool masks of each series' points.
    """

    def __init__(
        self,
        t: Tensor,
        values: Tensor,
        truth: Tensor,
        context: Tensor,
        interp: Tensor,
        extrap: Tensor,
    ):
        self.t, self.values, self.truth = t, values, truth
        self.context, self.interp, self.extrap = context, interp, extrap

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, i: int) -> IrregularBatch:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int], dense: bool = False) -> IrregularBatch:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        context, interp, extrap = self.context[idx], self.interp[idx], self.extrap[idx]
        target = context | interp | extrap
        # Union of the batch's times; the grid start stays so that every solve starts there.
        keep = torch.ones(self.t.numel(), dtype=torch.bool) if dense else target.any(0)
        keep[0] = True
        cols = keep.nonzero().squeeze(1)
        observed = target[:, cols, None]
        return IrregularBatch(
            times=self.t[cols],
            values=torch.where(observed, self.values[idx][:, cols], 0.0),
            truth=self.truth[idx][:, cols],
            context=context[:, cols],
            interp=interp[:, cols],
            extrap=extrap[:, cols],
            query=torch.ones_like(target[:, cols]) if dense else target[:, cols],
            index=idx,
        )

    def dense(self, indices: Sequence[int]) -> IrregularBatch:
        """The series on the whole grid, every grid point queried (for plots)."""
        return self.__getitems__(indices, dense=True)


def _already_batched(batch: IrregularBatch) -> IrregularBatch:
    return batch


def draw_masks(
    n: int,
    t: Tensor,
    t_observed: float,
    n_observed: int | None,
    interp_fraction: float,
    n_future: int | None,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per series: `n_observed` random grid points of the observation window (None: all of
    them; a fraction held out from the encoder) and `n_future` random points of the future
    window (None: all of them)."""
    window = (t <= t_observed + 1e-9).nonzero().squeeze(1)
    future = (t > t_observed + 1e-9).nonzero().squeeze(1)
    n_observed = window.numel() if n_observed is None else n_observed
    n_hold = round(interp_fraction * n_observed)
    context = torch.zeros(n, t.numel(), dtype=torch.bool)
    interp, extrap = torch.zeros_like(context), torch.zeros_like(context)
    n_fut = future.numel() if n_future is None else n_future
    for i in range(n):
        chosen = window[torch.randperm(window.numel(), generator=gen)[:n_observed]]
        interp[i, chosen[:n_hold]] = True
        context[i, chosen[n_hold:]] = True
        extrap[i, future[torch.randperm(future.numel(), generator=gen)[:n_fut]]] = True
    return context, interp, extrap


class IrregularSeriesDataModule(SplitLoaders, L.LightningDataModule):
    """Train/val/test splits of irregularly observed series; subclasses make the dense values.

    Args:
        t_observed: end of the observation window (encoder input and interpolation).
        n_observed: grid points each series observes inside the window (null: all).
        interp_fraction: share of those held out from the encoder and scored as interpolation.
        n_future: random future-window points scored per series (None: all of them).
        batch_size: series per batch (training and evaluation).
        seed: seeds the training series and their observation times.
        eval_seed: seeds the validation and test series: a fixed test set for every run.
        num_workers, pin_memory, persistent_workers: DataLoader options.
    """

    splits: dict[str, IrregularSeries]

    def __init__(
        self,
        t_observed: float,
        n_observed: int | None,
        interp_fraction: float = 0.2,
        n_future: int | None = None,
        batch_size: int = 50,
        seed: int = 0,
        eval_seed: int = 2019,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ):
        super().__init__()
        if n_observed is not None and n_observed < 2:
            raise ConfigError(f"data.n_observed must be >= 2 or null (all), got {n_observed}")
        if not 0 <= interp_fraction < 1:
            raise ConfigError(f"data.interp_fraction must be in [0, 1), got {interp_fraction}")
        if n_observed is not None and round(interp_fraction * n_observed) >= n_observed:
            raise ConfigError("data.interp_fraction holds out every observed point; lower it")
        if n_future is not None and n_future < 0:
            raise ConfigError(f"data.n_future must be >= 0 or null (all), got {n_future}")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.t_observed, self.n_observed = float(t_observed), n_observed
        self.interp_fraction, self.n_future = interp_fraction, n_future
        self.seed, self.eval_seed = seed, eval_seed
        self.init_loaders(batch_size, batch_size, num_workers, pin_memory, persistent_workers)
        # A dataset's `__getitems__` already builds the union batch.
        self.collate_fn = _already_batched

    # Subclasses: the grid and, per split, (noisy values, noise-free values) of shape (N, G, D).
    def grid(self) -> Tensor:
        raise NotImplementedError

    def dense_split(self, split: str, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _check_window(self, t: Tensor) -> None:
        in_window = int((t <= self.t_observed + 1e-9).sum())
        if in_window < 2:
            raise ConfigError(
                f"data.t_observed={self.t_observed} leaves {in_window} grid point(s) to observe; "
                "raise it"
            )
        if self.n_observed is not None and self.n_observed > in_window:
            raise ConfigError(
                f"data.n_observed={self.n_observed} exceeds the {in_window} grid points in "
                f"[0, t_observed={self.t_observed}]; lower it or refine the grid"
            )
        n_fut = t.numel() - in_window
        if self.n_future is not None and self.n_future > n_fut:
            raise ConfigError(
                f"data.n_future={self.n_future} exceeds the {n_fut} grid points after "
                f"t_observed; lower it or set null (all)"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        t = self.grid()
        self._check_window(t)
        for split in ("train", "val", "test"):
            seed = self.seed if split == "train" else self.eval_seed + (split == "test")
            gen = torch.Generator().manual_seed(seed)
            values, truth = self.dense_split(split, gen)
            masks = draw_masks(
                values.shape[0],
                t,
                self.t_observed,
                self.n_observed,
                self.interp_fraction,
                self.n_future,
                gen,
            )
            self.splits[split] = IrregularSeries(t, values, truth, *masks)

    @property
    def dim(self) -> int:
        return self.splits["train"].values.shape[-1] if self.splits else 1

    @property
    def shuffle_generator(self) -> torch.Generator:
        # A fresh generator per training loader: every loader made for the same seed
        # shuffles the series in the same order.
        return torch.Generator().manual_seed(self.seed)


def _interval(key: str, value: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0 < lo <= hi:
        raise ConfigError(f"data.{key} must be [low, high] with 0 < low <= high, got {list(value)}")
    return lo, hi


GRIDS = ("regular", "random")
OBSERVE = ("window", "first_half")
PHASES = ("random", "zero")
NOISES = ("gaussian", "uniform")


class PeriodicDataModule(IrregularSeriesDataModule):
    """Noisy sine waves `a sin(2 pi f t + phase) + offset` with random amplitude and frequency.

    The defaults are odelab's toy data; the switches `grid`, `observe`, `phase`, `offset`,
    `offset_std` and `noise` each move one aspect to the reference code of Rubanova et al.
    (`generate_timeseries.py`, `lib/parse_datasets.py`; `conf/data/periodic_authors.yaml`).

    Args:
        n_train, n_val, n_test: series per split.
        t_end: end of the grid (the future window is `(t_observed, t_end]`).
        grid_size: points of the common time grid on `[0, t_end]`.
        grid: "regular" (evenly spaced) or "random" (0 and `grid_size - 1` uniform times,
            sorted, drawn once from `eval_seed`: every split and run shares them).
        observe: "window" (points of `[0, t_observed]`) or "first_half" (the first
            `grid_size // 2` grid points; `t_observed` is then the last of them).
        noise_std: std of the Gaussian noise, or the width of the uniform noise.
        noise: "gaussian" (zero mean, every point) or "uniform" (U[0, noise_std), every
            point but t = 0, as the reference adds it).
        amplitude: [low, high] of the uniform amplitude.
        frequency: [low, high] of the uniform frequency (cycles per time unit).
        phase: "random" (uniform on [0, 2 pi)) or "zero".
        offset, offset_std: mean and std of a Gaussian constant added to each series.
        Other arguments: see `IrregularSeriesDataModule`.
    """

    def __init__(
        self,
        n_train: int = 400,
        n_val: int = 100,
        n_test: int = 100,
        t_observed: float = 5.0,
        t_end: float = 7.5,
        grid_size: int = 76,
        n_observed: int | None = 30,
        noise_std: float = 0.1,
        amplitude: Sequence[float] = (0.5, 1.5),
        frequency: Sequence[float] = (0.3, 0.6),
        grid: str = "regular",
        observe: str = "window",
        phase: str = "random",
        offset: float = 0.0,
        offset_std: float = 0.0,
        noise: str = "gaussian",
        **kwargs: object,
    ):
        super().__init__(t_observed=t_observed, n_observed=n_observed, **kwargs)
        for key, value, choices in (
            ("grid", grid, GRIDS),
            ("observe", observe, OBSERVE),
            ("phase", phase, PHASES),
            ("noise", noise, NOISES),
        ):
            if value not in choices:
                raise ConfigError(f"data.{key}={value!r}; choose one of {list(choices)}")
        if noise_std < 0:
            raise ConfigError(f"data.noise_std must be >= 0, got {noise_std}")
        if offset_std < 0:
            raise ConfigError(f"data.offset_std must be >= 0, got {offset_std}")
        if observe == "window" and not 0 < t_observed < t_end:
            raise ConfigError(f"data.t_observed must be in (0, t_end={t_end}), got {t_observed}")
        if grid_size < 3:
            raise ConfigError(f"data.grid_size must be >= 3, got {grid_size}")
        for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if n < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {n}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.t_end, self.grid_size, self.noise_std = float(t_end), grid_size, noise_std
        self.amplitude = _interval("amplitude", amplitude)
        self.frequency = _interval("frequency", frequency)
        self.grid_kind, self.observe, self.phase, self.noise = grid, observe, phase, noise
        self.offset, self.offset_std = float(offset), float(offset_std)
        self._grid: Tensor | None = None

    def grid(self) -> Tensor:
        if self._grid is None:
            if self.grid_kind == "regular":
                self._grid = torch.linspace(0.0, self.t_end, self.grid_size)
            else:
                gen = torch.Generator().manual_seed(self.eval_seed)
                inner = self.t_end * torch.rand(self.grid_size - 1, generator=gen)
                self._grid = torch.cat([torch.zeros(1), inner.sort().values])
            if self.observe == "first_half":
                self.t_observed = float(self._grid[self.grid_size // 2 - 1])
        return self._grid

    def dense_split(self, split: str, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n, t = self.sizes[split], self.grid()

        def uniform(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(n, 1, generator=gen)

        amp, freq = uniform(*self.amplitude), uniform(*self.frequency)
        # Drawn under phase=zero too, so that the other draws stay those of the default.
        phase = uniform(0.0, 2 * math.pi) * (self.phase == "random")
        truth = (amp * torch.sin(2 * math.pi * freq * t + phase))[..., None]
        if self.noise == "gaussian":
            noise = self.noise_std * torch.randn(truth.shape, generator=gen)
        else:
            noise = self.noise_std * torch.rand(truth.shape, generator=gen)
            noise[:, 0] = 0.0
        if self.offset_std > 0 or self.offset != 0:
            shift = self.offset + self.offset_std * torch.randn(n, 1, 1, generator=gen)
            truth = truth + shift
        return truth + noise, truth


# Sunspot years per split: disjoint blocks in time, the test block last.
SUNSPOT_SPLITS = {"train": (1700, 1909), "val": (1910, 1959), "test": (1960, 2008)}


def sunspot_numbers() -> tuple[Tensor, Tensor]:
    """Yearly sunspot numbers 1700-2008 (NGDC data as shipped by statsmodels): (years, values)."""
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    years = torch.tensor(frame["YEAR"].to_numpy(), dtype=torch.get_default_dtype())
    values = torch.tensor(frame["SUNACTIVITY"].to_numpy(), dtype=torch.get_default_dtype())
    return years, values


class SunspotsDataModule(IrregularSeriesDataModule):
    """Windows of the yearly sunspot record, each observed at irregular years.

    The record is square-rooted (the usual variance-stabilising transform for counts) and
    standardised with the training years' mean and std; windows of `window_years`
    consecutive years are cut with stride `stride` inside each split's block of years
    (train 1700-1909, val 1910-1959, test 1960-2008), so no window crosses a split.
    Time is measured in decades from the window's first year.

    Args:
        window_years: years per window; the last `future_years` form the future window.
        future_years: years to extrapolate.
        stride: years between the starts of consecutive windows.
        Other arguments: see `IrregularSeriesDataModule`.
    """

    def __init__(
        self,
        window_years: int = 40,
        future_years: int = 10,
        stride: int = 1,
        n_observed: int = 20,
        **kwargs: object,
    ):
        if not 0 < future_years < window_years:
            raise ConfigError(
                f"data.future_years must be in (0, window_years={window_years}), got {future_years}"
            )
        if stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {stride}")
        super().__init__(
            t_observed=(window_years - future_years - 1) / 10.0, n_observed=n_observed, **kwargs
        )
        self.window_years, self.future_years, self.stride = window_years, future_years, stride
        self._record: tuple[Tensor, Tensor] | None = None

    def grid(self) -> Tensor:
        return torch.arange(self.window_years, dtype=torch.get_default_dtype()) / 10.0

    def dense_split(self, split: str, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if self._record is None:
            years, values = sunspot_numbers()
            root = values.sqrt()
            lo, hi = SUNSPOT_SPLITS["train"]
            train = root[(years >= lo) & (years <= hi)]
            self._record = years, (root - train.mean()) / train.std()
        years, scaled = self._record
        lo, hi = SUNSPOT_SPLITS[split]
        block = scaled[(years >= lo) & (years <= hi)]
        if block.numel() < self.window_years:
            raise ConfigError(
                f"data.window_years={self.window_years} is longer than the {split} block "
                f"{lo}-{hi}; lower it"
            )
        windows = block.unfold(0, self.window_years, self.stride)[..., None]  # (N, G, 1)
        return windows, windows

"""Noisy periodic signals and a real series (yearly sunspot numbers), irregularly sampled.

The series machinery (batch, dataset, base data module) is `odelab.data.irregular`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from odelab.data.irregular import IrregularSeriesDataModule
from odelab.errors import ConfigError


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

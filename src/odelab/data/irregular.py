"""Irregularly sampled series on a common time grid: the batch, the dataset and the base
data module that the periodic, sunspot and Hopper data share.

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

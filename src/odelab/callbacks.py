"""Lightning callbacks shared by every task."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from odelab.errors import ConfigError
from odelab.ode import ODEBlock
from odelab.profiling import wait_for_device


def ode_blocks(module: L.LightningModule) -> list[ODEBlock]:
    return [m for m in module.modules() if isinstance(m, ODEBlock)]


def writes_logs_now(trainer: L.Trainer) -> bool:
    """Whether the loggers record step metrics after this training batch.

    Step values logged on other batches never reach a logger, and each
    `module.log` call costs more than a small ODE step's bookkeeping, so the
    per-step callbacks log only on these batches (every `log_every_n_steps`).
    """
    if trainer.fast_dev_run:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    return True if connector is None else bool(connector.should_update_logs)


class _StepMeans:
    """Per-epoch running sums of per-step values, kept as Python floats in a fixed list (no
    tensors, no logging, and nothing created per step)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.sums = [0.0] * len(keys)
        self.count = 0

    def log_and_reset(
        self, module: L.LightningModule, suffix: str = "", reduce_fx: str = "mean"
    ) -> None:
        if self.count:
            for key, total in zip(self.keys, self.sums, strict=True):
                module.log(
                    f"{key}{suffix}_epoch",
                    total / self.count,
                    on_step=False,
                    on_epoch=True,
                    sync_dist=True,
                    reduce_fx=reduce_fx,
                )
        self.sums[:] = [0.0] * len(self.keys)
        self.count = 0


def first_batch_size(batch: Any) -> int | None:
    """The batch size Lightning would infer for an epoch mean: the length of the first tensor
    in the batch (depth first). Passed explicitly, so a batch of several tensors of other
    lengths (a trajectory and its time grid) weighs the same without Lightning's
    "ambiguous collection" warning."""
    if isinstance(batch, torch.Tensor):
        return 1 if batch.ndim == 0 else int(batch.shape[0])
    if isinstance(batch, str):
        return None
    if isinstance(batch, Mapping):
        batch = batch.values()
    elif not isinstance(batch, Iterable) and dataclasses.is_dataclass(batch):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    if isinstance(batch, Iterable) and not isinstance(batch, type):
        for item in batch:
            size = first_batch_size(item)
            if size is not None:
                return size
    return None


class NFEMonitor(Callback):
    """Logs function evaluations per training step, forward and backward.

    Backward NFE are counted only once `backward()` has run, so the numbers are
    read after the optimizer step and the counters reset for the next step.
    Values are summed over all ODE blocks of the model. Training steps log
    `train/nfe_forward` and `train/nfe_backward` on the batches the loggers
    record, and their epoch means as `..._epoch`; evaluation logs
    `val/nfe_forward` and `test/nfe_forward` per epoch.

    Under DDP every process solves its own share of the batch, so there are
    two honest numbers: `across_processes="mean"` (default) logs the NFE of one
    process, averaged over processes, under the usual keys (`train/nfe_forward`,
    comparable with single-process runs); `"sum"` logs the total over all
    processes under keys ending in `_total` (`train/nfe_forward_total`).

    Args:
        across_processes: "mean" or "sum", how to combine processes under DDP.
    """

    def __init__(self, across_processes: Literal["mean", "sum"] = "mean"):
        if across_processes not in ("mean", "sum"):
            raise ConfigError(
                "callbacks.nfe_monitor.across_processes must be 'mean' or 'sum', got "
                f"{across_processes!r}"
            )
        self.reduce_fx = across_processes
        self.suffix = "_total" if across_processes == "sum" else ""
        self._blocks: list[ODEBlock] = []
        self._means = _StepMeans(("train/nfe_forward", "train/nfe_backward"))

    def _log(
        self,
        module: L.LightningModule,
        key: str,
        value: float,
        on_step: bool,
        batch_size: int | None = None,
    ) -> None:
        module.log(
            key + self.suffix,
            value,
            on_step=on_step,
            on_epoch=not on_step,
            sync_dist=True,
            reduce_fx=self.reduce_fx,
            batch_size=batch_size,
        )

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._blocks = ode_blocks(module)  # found once, not on every batch

    def _reset(self) -> None:
        for b in self._blocks:
            b.reset_nfe()

    def _eval_log_and_reset(self, module: L.LightningModule, stage: str, batch: Any) -> None:
        if self._blocks:
            forward = sum(b.nfe_forward for b in self._blocks)
            size = first_batch_size(batch)
            self._log(module, f"{stage}/nfe_forward", float(forward), False, size)
        self._reset()

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        self._reset()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        blocks = self._blocks
        if not blocks:
            return
        # Plain host integers summed in place: no dict, tensor or log call on most steps.
        forward = backward = 0
        for b in blocks:
            count = b.func.count
            forward += count.forward
            backward += count.backward
            b.reset_nfe()
        means = self._means
        means.sums[0] += forward
        means.sums[1] += backward
        means.count += 1
        if writes_logs_now(trainer):
            self._log(module, "train/nfe_forward", float(forward), on_step=True)
            self._log(module, "train/nfe_backward", float(backward), on_step=True)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._means.log_and_reset(module, self.suffix, self.reduce_fx)

    def on_validation_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        self._reset()

    def on_validation_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_log_and_reset(module, "val", args[1])

    def on_test_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        self._reset()

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._eval_log_and_reset(module, "test", args[1])


class StepTimer(Callback):
    """Logs the wall time of each training step (forward, backward and update).

    `train/step_time` on the batches the loggers record, its epoch mean as
    `train/step_time_epoch`. Under DDP the value is averaged over processes.
    """

    def __init__(self) -> None:
        self._start = 0.0
        self._means = _StepMeans(("train/step_time",))

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        wait_for_device(module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        wait_for_device(module.device)  # time the kernels, not their launch
        seconds = time.perf_counter() - self._start
        means = self._means
        means.sums[0] += seconds
        means.count += 1
        if writes_logs_now(trainer):
            module.log("train/step_time", seconds, on_step=True, on_epoch=False, sync_dist=True)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._means.log_and_reset(module)


class EpochTimer(Callback):
    """Logs `train/epoch_time`: wall seconds from the epoch's start to its last training step.

    Validation that runs at the end of the epoch is not included.
    """

    def __init__(self) -> None:
        self._start = self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        module.log("train/epoch_time", self._last - self._start, on_step=False, on_epoch=True)


class SaveFigures(Callback):
    """Saves the task's `figures()` to `<run dir>/plots` and the loggers when training ends.

    Evaluation-only runs (no fit) save them after testing instead.
    """

    def __init__(self, dirname: str = "plots"):
        self.dirname = dirname
        self._saved = False

    def _save(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        figures_fn = getattr(module, "figures", None)
        if figures_fn is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        from pathlib import Path

        from odelab.plotting import save_and_log

        figures = figures_fn()
        if figures:
            folder = Path(trainer.default_root_dir) / self.dirname
            save_and_log(figures, folder, trainer.loggers, step=trainer.global_step)
            self._saved = True

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer, module)

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._saved:
            self._save(trainer, module)

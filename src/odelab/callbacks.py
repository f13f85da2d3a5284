"""Lightning callbacks shared by every task."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from odelab.errors import ConfigError
from odelab.ode import ODEBlock


def ode_blocks(module: L.LightningModule) -> list[ODEBlock]:
    return [m for m in module.modules() if isinstance(m, ODEBlock)]


class NFEMonitor(Callback):
    """Logs function evaluations per training step, forward and backward.

    Backward NFE are counted only once `backward()` has run, so the numbers are
    read after the optimizer step and the counters reset for the next step.
    Values are summed over all ODE blocks of the model.

    Under DDP every process solves its own share of the batch, so there are
    two honest numbers: `across_processes="mean"` (default) logs the NFE of one
    process, averaged over processes, under the usual keys (`train/nfe_forward`,
    comparable with single-process runs); `"sum"` logs the total over all
    processes under keys ending in `_total` (`train/nfe_forward_total`).

    Args:
        across_processes: "mean" or "sum", how to combine processes under DDP.
    """

    def __init__(self, across_processes: str = "mean"):
        if across_processes not in ("mean", "sum"):
            raise ConfigError(
                f"callbacks.nfe_monitor.across_processes must be 'mean' or 'sum', got {across_processes!r}"
            )
        self.reduce_fx = across_processes
        self.suffix = "_total" if across_processes == "sum" else ""

    def _log(self, module: L.LightningModule, key: str, value: float, on_step: bool) -> None:
        module.log(
            key + self.suffix, value, on_step=on_step, on_epoch=True, sync_dist=True, reduce_fx=self.reduce_fx
        )

    def _log_and_reset(self, module: L.LightningModule, stage: str, backward: bool) -> None:
        blocks = ode_blocks(module)
        if not blocks:
            return
        forward = sum(b.nfe_forward for b in blocks)
        self._log(module, f"{stage}/nfe_forward", float(forward), on_step=stage == "train")
        if backward:
            back = sum(b.nfe_backward for b in blocks)
            self._log(module, f"{stage}/nfe_backward", float(back), on_step=True)
        for b in blocks:
            b.reset_nfe()

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        for b in ode_blocks(module):
            b.reset_nfe()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._log_and_reset(module, "train", backward=True)

    def on_validation_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        for b in ode_blocks(module):
            b.reset_nfe()

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._log_and_reset(module, "val", backward=False)

    def on_test_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        for b in ode_blocks(module):
            b.reset_nfe()

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._log_and_reset(module, "test", backward=False)


class StepTimer(Callback):
    """Logs the wall time of each training step (forward, backward and update).

    Under DDP the value is averaged over processes.
    """

    def __init__(self) -> None:
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        elapsed = time.perf_counter() - self._start
        module.log("train/step_time", elapsed, on_step=True, on_epoch=True, sync_dist=True)


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

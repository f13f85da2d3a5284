"""odelab's training step against a hand-written loop doing the same work (the spiral),
with the floor every LightningModule pays: the same step in a bare LightningModule.

The three run in one process, rotating which goes first, so they share the machine's
load: `experiments/bench_spiral.py` and `experiments/bench_speed.py` report the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torchdiffeq import odeint

from odelab.harness import compose, run_quietly
from odelab.reports.claims import load_claims

# The target the speed and spiral reports judge the ratio against (conf/claims/checks.yaml).
OVERHEAD_TARGET = load_claims("checks")["framework_overhead"].threshold


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The spiral config on the CPU, quiet and without a logger: only the work itself is timed."""
    return compose(
        ["trainer=cpu", *overrides], output_dir, logger="none", log_dir=output_dir / "logs"
    )


# ---------------------------------------------------------------------------
# 1. Framework overhead


class StepWindowTimer(L.Callback):
    """Times training steps `warmup` .. `warmup + steps - 1` (data fetch and hooks included).

    The clock starts at the end of step `warmup - 1`, so the window holds exactly
    `steps` whole iterations of Lightning's loop. The result and the final
    weights go to the class attribute `last`, read once `run` returns.
    """

    last: ClassVar[dict[str, Any]] = {}

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self._start = (0.0, 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        done = trainer.global_step  # optimizer steps taken so far
        if done == self.warmup:
            self._start = time.perf_counter(), time.process_time()
        elif done == self.warmup + self.steps:
            StepWindowTimer.last["seconds"] = time.perf_counter() - self._start[0]
            StepWindowTimer.last["cpu_seconds"] = time.process_time() - self._start[1]

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        StepWindowTimer.last["params"] = [p.detach().clone() for p in module.parameters()]


def overhead_config(
    seed: int, warmup: int, steps: int, workdir: Path, extra: Sequence[str] = ()
) -> DictConfig:
    """The spiral recipe for `warmup + steps` steps: no validation, checkpoints or figures
    (`extra`: further overrides, e.g. shorter epochs in tests)."""
    return compose_config(
        [
            "experiment=spiral",
            f"seed={seed}",
            f"trainer.max_steps={warmup + steps}",
            "trainer.limit_val_batches=0",
            "+trainer.enable_checkpointing=false",
            "~callbacks.model_checkpoint",
            "~callbacks.save_figures",
            "~callbacks.on_exception_checkpoint",
            "test=false",
            "+callbacks.window_timer._target_=bench.overhead.StepWindowTimer",
            f"+callbacks.window_timer.warmup={warmup}",
            f"+callbacks.window_timer.steps={steps}",
            *extra,
        ],
        workdir,
    )


def odelab_steps(cfg: DictConfig) -> dict[str, Any]:
    """Train through `odelab.train.run` (NFEMonitor and StepTimer on, as by default).

    Each repetition is a fresh run: the scratch folder's checkpoints from the one before
    are removed (a run refuses a folder holding another run's `last.ckpt`)."""
    shutil.rmtree(Path(cfg.paths.output_dir) / "checkpoints", ignore_errors=True)
    StepWindowTimer.last = {}
    run_quietly(cfg)
    return dict(StepWindowTimer.last)


@dataclass
class PlainParts:
    """The spiral's work outside odelab: field, optimizer, schedule, solver settings and the
    windows odelab's sampler draws, epoch by epoch (same seeds, so the same batches)."""

    field: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step_scheduler: bool  # stepped after every optimizer step (else once an epoch)
    odeint_kwargs: dict[str, Any]
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    clip: float | None
    epoch_batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]]
    batches_per_epoch: int


def plain_parts(cfg: DictConfig) -> PlainParts:
    """Build the spiral's work from `cfg` with the same initial weights as `odelab.train.run`."""
    L.seed_everything(cfg.seed, verbose=False)
    data = instantiate(cfg.data)  # only to get the same observations; not timed
    data.setup("fit")
    observed = data.trajectory.observed
    times = data.trajectory.t
    L.seed_everything(cfg.seed, verbose=False)  # as `run` does: same initial weights
    field = instantiate(cfg.model.field)
    optimizer = instantiate(cfg.model.optimizer)(params=field.parameters())
    scheduler = None
    if cfg.model.scheduler is not None:
        scheduler = instantiate(cfg.model.scheduler)(optimizer=optimizer)
    solver = cfg.solver
    odeint_kwargs = {
        "method": solver.method,
        "rtol": solver.rtol,
        "atol": solver.atol,
        "options": {"max_num_steps": solver.max_num_steps},
    }

    def window_length(epoch: int) -> int:  # the data config's curriculum, if any
        first, final, growth = data.batch_time, data.batch_time_final, data.batch_time_growth_epochs
        if final is None:
            return first
        return final if epoch >= growth else round(first + (final - first) * epoch / growth)

    def epoch_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        length = window_length(epoch)
        offsets = torch.arange(length)
        gen = torch.Generator().manual_seed(data.seed * 100_003 + epoch)
        starts = torch.randint(
            observed.shape[0] - length + 1, (data.batches_per_epoch, data.batch_size), generator=gen
        )
        for row in starts:
            yield times[:length], observed[row[:, None] + offsets].transpose(0, 1)

    return PlainParts(
        field=field,
        optimizer=optimizer,
        scheduler=scheduler,
        step_scheduler=scheduler is not None and cfg.model.scheduler_interval == "step",
        odeint_kwargs=odeint_kwargs,
        loss_fn=nn.functional.l1_loss if cfg.model.loss == "l1" else nn.functional.mse_loss,
        clip=cfg.trainer.gradient_clip_val,
        epoch_batches=epoch_batches,
        batches_per_epoch=data.batches_per_epoch,
    )


def plain_steps(cfg: DictConfig, warmup: int, steps: int) -> dict[str, Any]:
    """The same training written as a plain torch + torchdiffeq loop."""
    parts = plain_parts(cfg)
    field, optimizer, kwargs = parts.field, parts.optimizer, parts.odeint_kwargs

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        epoch = 0
        while True:
            yield from parts.epoch_batches(epoch)
            if parts.scheduler is not None and not parts.step_scheduler:
                parts.scheduler.step()
            epoch += 1

    start, cpu_start = 0.0, 0.0
    for step, (t_window, windows) in enumerate(batches()):
        if step == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
        if step == warmup + steps:
            break
        pred = odeint(field, windows[0], t_window, **kwargs)
        loss = parts.loss_fn(pred, windows)
        optimizer.zero_grad()
        loss.backward()
        if parts.clip:
            nn.utils.clip_grad_norm_(field.parameters(), parts.clip)
        optimizer.step()
        if parts.step_scheduler:
            parts.scheduler.step()
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "params": [p.detach().clone() for p in field.parameters()],
    }


# ---------------------------------------------------------------------------
# The floor: Lightning alone


class _EpochBatches:
    """The plain loop's windows as an iterable Lightning re-enters every epoch. The epoch is
    the trainer's: Lightning also opens an iterator before the first epoch starts."""

    def __init__(self, parts: PlainParts, trainer: L.Trainer):
        self.parts, self.trainer = parts, trainer

    def __len__(self) -> int:
        return self.parts.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.parts.epoch_batches(self.trainer.current_epoch)


class BareModule(L.LightningModule):
    """The plain loop's step as the smallest LightningModule: no odelab code, no logging."""

    def __init__(self, parts: PlainParts):
        super().__init__()
        self.field = parts.field
        self.parts = parts

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        t, windows = batch
        pred = odeint(self.field, windows[0], t, **self.parts.odeint_kwargs)
        return self.parts.loss_fn(pred, windows)

    def configure_optimizers(self) -> Any:
        parts = self.parts
        if parts.scheduler is None:
            return parts.optimizer
        interval = "step" if parts.step_scheduler else "epoch"
        return {
            "optimizer": parts.optimizer,
            "lr_scheduler": {"scheduler": parts.scheduler, "interval": interval},
        }


def lightning_steps(cfg: DictConfig, warmup: int, steps: int) -> dict[str, Any]:
    """The plain loop's work in `BareModule` under a bare `Trainer` (no logger, checkpoints,
    progress bar or callbacks but the window timer): what Lightning alone costs per step."""
    parts = plain_parts(cfg)
    module = BareModule(parts)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=parts.clip,
        callbacks=[StepWindowTimer(warmup, steps)],
    )
    StepWindowTimer.last = {}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(module, train_dataloaders=_EpochBatches(parts, trainer))
    return dict(StepWindowTimer.last)


# ---------------------------------------------------------------------------
# The measurement

SIDES = ("plain", "lightning", "odelab")
LABELS = {
    "plain": "plain torch + torchdiffeq",
    "lightning": "bare LightningModule",
    "odelab": "odelab",
}


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.3f} to {max(ratios):.3f}"


def overhead(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Per-step times of the hand-written loop, the bare LightningModule and odelab, in
    interleaved repeats (the order rotates, so none always gets a cold start); print them
    and the ratios against the hand-written loop with their spread over the repeats; return
    them (ms per step, every repeat) as a record.

    Process CPU time is printed beside wall time: on a shared machine it is
    less sensitive to other programs stealing the cores.
    """
    steps, warmup = args.overhead_steps, args.warmup
    print(f"\n== framework overhead: {steps} training steps timed after {warmup} warm-up")
    cfg = overhead_config(0, warmup, steps, workdir / "overhead", getattr(args, "overrides", ()))
    run_side = {
        "plain": lambda: plain_steps(cfg, warmup, steps),
        "lightning": lambda: lightning_steps(cfg, warmup, steps),
        "odelab": lambda: odelab_steps(cfg),
    }
    times: dict[str, dict[str, list[float]]] = {
        side: {"seconds": [], "cpu_seconds": []} for side in SIDES
    }
    weights: dict[str, list[Tensor]] = {}
    for rep in range(args.repeats):
        order = SIDES[rep % 3 :] + SIDES[: rep % 3]
        for side in order:
            result = run_side[side]()
            for key, series in times[side].items():
                series.append(1e3 * result[key] / steps)
            weights[side] = result["params"]
            print(
                f"  repeat {rep}  {side:<9} wall {times[side]['seconds'][-1]:7.2f} ms/step   "
                f"cpu {times[side]['cpu_seconds'][-1]:7.2f} ms/step",
                flush=True,
            )
    diff = max(
        float((a - b).abs().max())
        for side in ("lightning", "odelab")
        for a, b in zip(weights["plain"], weights[side], strict=True)
    )
    med = {side: {k: statistics.median(v) for k, v in t.items()} for side, t in times.items()}
    for side in SIDES:
        print(
            f"  {LABELS[side]:<26} wall {med[side]['seconds']:7.2f} ms/step   "
            f"cpu {med[side]['cpu_seconds']:7.2f} ms/step   (medians of {args.repeats})"
        )
    print(f"  same work check: max |weight difference| after training = {diff:.1e}")
    for side in ("lightning", "odelab"):
        for clock, name in (("seconds", "wall"), ("cpu_seconds", "cpu")):
            per_repeat = [
                o / p for o, p in zip(times[side][clock], times["plain"][clock], strict=True)
            ]
            ratio = med[side][clock] / med["plain"][clock]
            print(
                f"  RATIO {LABELS[side]} / plain ({name}) = {ratio:.3f}   per repeat "
                f"{_spread(per_repeat)}   (target <= {OVERHEAD_TARGET})"
            )
    return {
        "steps": steps,
        "warmup": warmup,
        "repeats": args.repeats,
        "ms_per_step": times,
        "max_weight_difference": diff,
    }

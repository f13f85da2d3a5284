"""Peak memory of one training step, on GPU and on CPU.

Three meters, each naming what it counts:

- `cuda_peak`: `torch.cuda.max_memory_allocated` during the step, minus what
  was allocated before it (parameters, optimizer state, the batch).
- `allocation_peak` (CPU): the torch profiler's memory accounting. Every CPU
  allocation and free during the step is replayed in time order; the peak of
  the running sum is the most memory the step held at once on top of what
  existed before it. It counts everything: autograd activations, the solver's
  working tensors (the forward solve's stages, the adjoint's backward solve and
  its augmented state) and the parameter gradients.
- `saved_activation_peak` (CPU or GPU): the most bytes that autograd held at once
  in tensors saved for backward (the activations), via saved-tensor hooks.
  Parameters saved by layers are not counted; memory that never enters the
  autograd graph (a no-grad solve's working tensors) is not counted either.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

MIB = 2**20


def wait_for_device(device: torch.device) -> None:
    """Block until the device has finished its queued work (GPU kernels run asynchronously:
    time them, not their launch). A no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedTensorMeter:
    """Tracks the bytes autograd keeps in saved tensors, live and at their peak.

    Storages are counted once however many times they are saved; `exclude`
    lists tensors (the parameters) whose storage is not an activation.
    """

    def __init__(self, exclude: list[Tensor] | None = None):
        self._excluded = {_storage_key(t) for t in exclude or []}
        self._refs: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def _pack(self, tensor: Tensor) -> Any:
        key = _storage_key(tensor)
        if key in self._excluded or tensor.layout != torch.strided:
            return tensor
        return _Saved(self, tensor, key)

    @staticmethod
    def _unpack(saved: Any) -> Tensor:
        return saved.tensor if isinstance(saved, _Saved) else saved

    def _acquire(self, key: int, nbytes: int) -> None:
        count = self._refs.get(key, 0)
        if count == 0:
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._refs[key] = count + 1

    def _release(self, key: int, nbytes: int) -> None:
        count = self._refs.get(key, 0) - 1
        if count <= 0:
            self._refs.pop(key, None)
            self.live_bytes -= nbytes
        else:
            self._refs[key] = count

    @contextlib.contextmanager
    def measure(self) -> Iterator[SavedTensorMeter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


class _Saved:
    """A saved tensor that reports its release when autograd frees the graph."""

    __slots__ = ("key", "meter", "nbytes", "tensor")

    def __init__(self, meter: SavedTensorMeter, tensor: Tensor, key: int):
        # Detached: holding an output with its grad_fn would tie the graph in a
        # reference cycle that outlives backward().
        self.meter, self.tensor, self.key = meter, tensor.detach(), key
        self.nbytes = tensor.untyped_storage().nbytes()
        meter._acquire(key, self.nbytes)

    def __del__(self) -> None:
        self.meter._release(self.key, self.nbytes)


def _storage_key(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@dataclass(frozen=True)
class StepMemory:
    """Peak memory of one training step in bytes; None where a meter does not apply."""

    device: str
    saved_activations: int
    allocations: int | None  # CPU: torch profiler accounting
    cuda_peak: int | None  # GPU: max_memory_allocated above the pre-step level

    @property
    def peak(self) -> int:
        """The headline figure: the device peak where measured, else the activations."""
        for value in (self.cuda_peak, self.allocations):
            if value is not None:
                return value
        return self.saved_activations


def training_step_memory(
    model: nn.Module,
    step: Callable[[], Tensor],
    profile_allocations: bool = True,
) -> StepMemory:
    """Runs `step()` (forward, returns the loss), then `backward()`, and measures its peak memory.

    Args:
        model: the module whose parameters are excluded from the activations.
        step: computes the loss of one batch.
        profile_allocations: on CPU, also replay the profiler's allocation events.
    """
    device = next(model.parameters()).device
    meter = SavedTensorMeter(exclude=list(model.parameters()))
    cuda = device.type == "cuda"
    profiler = None
    if cuda:
        wait_for_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    elif profile_allocations:
        profiler = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        )
    with profiler or contextlib.nullcontext(), meter.measure():
        loss = step()
        loss.backward()
        del loss
    cuda_peak = None
    if cuda:
        wait_for_device(device)
        cuda_peak = torch.cuda.max_memory_allocated(device) - before
    allocations = _allocation_peak(profiler) if profiler is not None else None
    return StepMemory(str(device), meter.peak_bytes, allocations, cuda_peak)


def _allocation_peak(profiler: torch.profiler.profile) -> int:
    """Peak of the running sum of the CPU allocations and frees the profiler recorded.

    Each op's own (self) allocations net of its own frees are placed at its start,
    so the resolution is one op: a temporary freed inside the op that made it is
    not seen.
    """
    events = [
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in profiler.events()
        if e.self_cpu_memory_usage != 0
    ]
    live = peak = 0
    for _, delta in sorted(events, key=lambda item: item[0]):
        live += delta
        peak = max(peak, live)
    return peak


class PeakMemoryMonitor(Callback):
    """Logs the peak memory of one training step (`train/peak_memory_mb`, `train/activations_mb`).

    Measures step `at_step` only (after warm-up), since the CPU profiler slows
    the step it watches. On GPU the device peak is logged, on CPU the profiler's
    allocation peak; `train/activations_mb` is the saved-tensor peak on both.

    Args:
        at_step: global step to measure (0-based).
        profile_allocations: on CPU, run the profiler's allocation accounting too.
    """

    def __init__(self, at_step: int = 1, profile_allocations: bool = True):
        self.at_step = at_step
        self.profile_allocations = profile_allocations
        self._stack: contextlib.ExitStack | None = None
        self._meter: SavedTensorMeter | None = None
        self._profiler: torch.profiler.profile | None = None
        self._cuda_before = 0
        self._done = False

    def _active(self, trainer: L.Trainer) -> bool:
        return not self._done and trainer.global_step == self.at_step

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *args: Any
    ) -> None:
        if not self._active(trainer):
            return
        self._stack = contextlib.ExitStack()
        self._meter = SavedTensorMeter(exclude=list(module.parameters()))
        if module.device.type == "cuda":
            wait_for_device(module.device)
            torch.cuda.reset_peak_memory_stats(module.device)
            self._cuda_before = torch.cuda.memory_allocated(module.device)
        elif self.profile_allocations:
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            self._stack.enter_context(self._profiler)
        self._stack.enter_context(self._meter.measure())

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if self._stack is None or self._meter is None:
            return
        self._stack.close()
        self._stack, self._done = None, True
        peak: int | None = None
        if module.device.type == "cuda":
            wait_for_device(module.device)
            peak = torch.cuda.max_memory_allocated(module.device) - self._cuda_before
        elif self._profiler is not None:
            peak = _allocation_peak(self._profiler)
            self._profiler = None
        module.log(
            "train/activations_mb", self._meter.peak_bytes / MIB, on_step=True, on_epoch=False
        )
        if peak is not None:
            module.log("train/peak_memory_mb", peak / MIB, on_step=True, on_epoch=False)
        self._meter = None


class DeviceInfo(Callback):
    """Writes `device.json` into the run folder: the hardware behind the run's timings."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        info = describe_device(module.device)
        path = Path(trainer.default_root_dir) / "device.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=2) + "\n")


def describe_device(device: torch.device) -> dict[str, Any]:
    """Name, kind and thread count of `device`, for reports."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "type": device.type,
        "name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

"""Counting host reads of tensor values (each one a device sync on CUDA), for benchmarks."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from odelab.harness import compose, run_quietly

# Every host read of a tensor's value dispatches to this op: Tensor.item(), bool(), float(),
# int(), a comparison used in a Python `if`/`while`. On CUDA each one waits for the device.
_SCALAR_READ = torch.ops.aten._local_scalar_dense.default
_LIBRARIES = ("odelab", "torchdiffeq", "torchode", "lightning", "torchmetrics")
# Frames of the dispatch machinery and of this module are not where a read comes from.
_SKIP = (
    "torch/utils/_python_dispatch",
    "torch/_tensor.py",
    "torch/overrides.py",
    "torch/_dynamo/",
    "torch/_compile.py",
    __file__,
)


def _caller_library() -> str:
    """The library of the innermost Python frame that asked for a host read."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if not any(skip in path for skip in _SKIP):
            for lib in _LIBRARIES:
                if f"/{lib}/" in path:
                    return lib
            if "/torch/optim/" in path:
                return "torch.optim"
            return "torch" if "/torch/" in path else "other"
        frame = frame.f_back
    return "other"


@dataclass
class SyncCount:
    """Host reads of tensor values (`aten::_local_scalar_dense`), in total and by the
    library whose code asked for them."""

    total: int = 0
    by_library: dict[str, int] = field(default_factory=dict)

    def add(self, library: str) -> None:
        self.total += 1
        self.by_library[library] = self.by_library.get(library, 0) + 1


@contextmanager
def count_host_reads() -> Iterator[SyncCount]:
    """Count the host reads of tensor values made inside the block.

    Every read dispatches to one op, `aten::_local_scalar_dense`, which a dispatch mode
    sees however it was asked for; the Python stack names the library. On the CPU a host
    read is a plain memory load; each one counted here waits for the device when the same
    code runs on CUDA with the tensor there (reads of tensors that live on the host, such
    as the optimizer's step counters, do not).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    count = SyncCount()

    class _Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func is _SCALAR_READ:
                count.add(_caller_library())
            return func(*args, **(kwargs or {}))

    with _Reads():
        yield count


# ---------------------------------------------------------------------------
# 1. Host reads per training step


class HostReadCounter(L.Callback):
    """Counts host reads during training steps `first` .. `first + steps - 1` (forward,
    backward, optimizer step and every hook between them)."""

    last: ClassVar[dict[str, Any]] = {}

    def __init__(self, first: int, steps: int):
        self.first, self.steps = first, steps
        self._context: Any = None
        self._count: SyncCount | None = None
        self.total = SyncCount()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.first <= trainer.global_step < self.first + self.steps:
            self._context = count_host_reads()
            self._count = self._context.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._context is None:
            return
        self._context.__exit__(None, None, None)
        for lib, n in self._count.by_library.items():
            for _ in range(n):
                self.total.add(lib)
        self._context = None
        HostReadCounter.last = {
            "steps": self.steps,
            "total": self.total.total,
            "by_library": dict(self.total.by_library),
        }


READ_CASES: dict[str, list[str]] = {
    "spiral (dopri5, direct)": ["experiment=spiral"],
    "spiral (torchode dopri5, direct)": ["experiment=spiral", "solver.backend=torchode"],
    "ODE-Net (dopri5, adjoint)": ["experiment=mnist_odenet"],
    "RK-Net (rk4, direct)": ["experiment=mnist_rknet"],
    "RK-Net (rk4, direct, capture loop)": ["experiment=mnist_rknet", "solver.capture=true"],
    "CNF (dopri5, direct)": ["experiment=cnf_toy"],
}
# Small sizes: the number of reads does not depend on them, the time does.
SHRINK = {
    "mnist": [
        "data.train_subset=256",
        "data.batch_size=16",
        "model.net.channels=16",
        "~callbacks.peak_memory",
    ],
    "cnf": ["data.batch_size=64", "data.batches_per_epoch=20"],
}


def host_reads(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    first, steps = 2, args.read_steps
    print(f"\n== 1. host reads per training step (steps {first}..{first + steps - 1})")
    out: dict[str, Any] = {"steps": steps, "cases": {}}
    for i, (name, overrides) in enumerate(READ_CASES.items()):
        shrink = (
            SHRINK["mnist"]
            if "mnist" in overrides[0]
            else (SHRINK["cnf"] if "cnf" in overrides[0] else [])
        )
        cfg = compose(
            [
                "trainer=cpu",
                *overrides,
                *shrink,
                "seed=0",
                f"trainer.max_steps={first + steps}",
                "trainer.limit_val_batches=0",
                "test=false",
                "+trainer.enable_checkpointing=false",
                "~callbacks.model_checkpoint",
                "~callbacks.save_figures",
                "~callbacks.on_exception_checkpoint",
                "+callbacks.host_reads._target_=bench.host_reads.HostReadCounter",
                f"+callbacks.host_reads.first={first}",
                f"+callbacks.host_reads.steps={steps}",
            ],
            workdir / f"reads_{i}",
            logger="none",
            log_dir=workdir / "logs",
        )
        HostReadCounter.last = {}
        run_quietly(cfg)
        record = dict(HostReadCounter.last)
        out["cases"][name] = record
        per_step = record["total"] / steps
        libs = ", ".join(f"{k} {v / steps:.1f}" for k, v in sorted(record["by_library"].items()))
        print(f"  {name:<38} {per_step:7.1f} reads/step   ({libs})", flush=True)
    return out

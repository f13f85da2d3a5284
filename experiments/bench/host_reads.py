"""Counting host reads of tensor values (each one a device sync on CUDA), for benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

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

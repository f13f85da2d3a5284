"""The MNIST benchmark records: `bench/mnist_memory.json` (experiments/mnist_memory.py, one
training step per horizon T) and `bench/mnist_tolerance.json` (experiments/mnist_tolerance.py,
a trained ODE-Net per tolerance)."""

from __future__ import annotations

from odelab.records import schema

MemoryRow = schema(
    "MemoryRow",
    "One training step at one horizon T.",
    (str, "solver sensitivity"),
    (int, "nfe_forward nfe_backward"),
    (float, "T peak_mb saved_activations_mb step_time_s"),
    (float | None, "cpu_allocations_mb cuda_peak_mb", None),
)
MemoryRecord = schema(
    "MemoryRecord",
    "`bench/mnist_memory.json`.",
    (dict, "device ratios"),
    (int, "batch_size channels"),
    (str, "weights inputs measure"),
    (list[MemoryRow], "rows"),
)
ToleranceRow = schema(
    "ToleranceRow",
    "The ODE-Net trained at one tolerance.",
    (float, "tol test_error test_nfe_forward test_seconds_per_batch train_step_seconds"),
    (int, "train_nfe_forward train_nfe_backward"),
    (float | None, "test_cpu_seconds_per_batch train_step_cpu_seconds", None),
)
ToleranceRecord = schema(
    "ToleranceRecord",
    "`bench/mnist_tolerance.json`.",
    (str, "run sensitivity data"),
    (float, "trained_tol"),
    (int, "test_images eval_batch_size train_batch_size"),
    (dict, "device"),
    (list[ToleranceRow], "rows"),
    (int, "repeats", 1),
)

"""The one reader of a finished run folder: config, overrides, final metrics, history, device.

Every run of `run.py` (single or a sweep's job) leaves behind:
`config.yaml` (the config with every interpolation resolved), Hydra's
`.hydra/config.yaml` and `.hydra/overrides.yaml`,
`metrics.json` (final metrics; absent when the run failed), `device.json`
(the hardware), `job.json` (in sweeps: status, wall time, error) and, with
`logger=csv`, `csv/metrics.csv` (every logged value). Sweeps, reports and
benchmarks all read runs through `load_run`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from odelab.errors import ConfigError

# The files that make a run's record (what a report is rendered from); never checkpoints.
RECORD_FILES = (
    "config.yaml",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "metrics.json",
    "job.json",
    "device.json",
    "csv/metrics.csv",
    ".hydra/hydra.yaml",
    # The one-line reason a run diverged (odelab.tasks.dynamics): counted, never dropped.
    "failure.txt",
)
RECORD_GLOBS = ("plots/*.png", "*.json")


@dataclass
class Run:
    """One run, loaded from its folder."""

    path: Path
    config: DictConfig | None
    metrics: dict[str, float]
    overrides: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Finished with final metrics (a failed sweep job has none)."""
        return bool(self.metrics)

    @property
    def override_map(self) -> dict[str, str]:
        return dict(o.split("=", 1) for o in self.overrides if "=" in o)

    @property
    def seconds(self) -> float | None:
        return self.job.get("seconds")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a metric over the run, in logging order.

        A metric logged both per step and per epoch is stored by Lightning as
        `<key>_step`; that name is read when `key` itself was never logged.
        """
        steps, values = [], []
        for name in (key, f"{key}_step"):
            for row in self.history:
                if name in row and "step" in row:
                    steps.append(int(row["step"]))
                    values.append(row[name])
            if values:
                break
        return steps, values

    def epoch_series(self, key: str) -> tuple[list[int], list[float]]:
        """(epoch, value) of a metric logged once per epoch (validation metrics)."""
        epochs, values = [], []
        for row in self.history:
            if key in row and "epoch" in row:
                epochs.append(int(row["epoch"]))
                values.append(row[key])
        return epochs, values

    def last(self, key: str) -> float | None:
        """The final metric if saved, else the last logged value."""
        if key in self.metrics:
            return self.metrics[key]
        _, values = self.series(key)
        return values[-1] if values else None

    @property
    def epochs(self) -> int:
        """Training epochs that completed (counted from the logged epoch-level values)."""
        epochs = {int(row["epoch"]) for row in self.history if "train/loss_epoch" in row}
        return len(epochs)

    @property
    def checkpoint(self) -> Path:
        """The run's final checkpoint (`checkpoints/last.ckpt`; it may be absent)."""
        return self.path / "checkpoints" / "last.ckpt"

    def trained_task(self) -> Any:
        """The run's task (`config.model`) with the weights of `checkpoints/last.ckpt`, on CPU."""
        import torch
        from hydra.utils import instantiate

        checkpoint = self.checkpoint
        if self.config is None or not checkpoint.is_file():
            raise ConfigError(f"{self.path} has no config or no checkpoints/last.ckpt to load")
        task = instantiate(self.config.model)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
        return task

    @property
    def step_seconds(self) -> float | None:
        """Seconds spent in optimizer steps over the kept epochs, from the history.

        Each epoch's mean `train/step_time` times its steps (the difference of the
        epoch-end global steps). Unlike the job's wall time it survives a run that was
        killed and resumed; it leaves out validation, data loading and testing.
        """
        ends: dict[int, tuple[int, float]] = {}
        for row in self.history:
            if "train/step_time_epoch" in row and "epoch" in row and "step" in row:
                ends[int(row["epoch"])] = (int(row["step"]), row["train/step_time_epoch"])
        if not ends:
            return None
        total, previous = 0.0, -1
        for epoch in sorted(ends):
            step, mean = ends[epoch]
            total += mean * (step - previous)
            previous = step
        return total

    @property
    def train_steps(self) -> int:
        """Optimizer steps reached (from the step-level training loss, logged as
        `train/loss_step` beside an epoch mean or as `train/loss` alone)."""
        for key in ("train/loss_step", "train/loss"):
            steps, _ = self.series(key)
            if steps:
                return max(steps) + 1
        return 0


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def load_run(path: str | Path, *, require_finished: bool = False) -> Run:
    """Load a run folder. With `require_finished`, a folder without metrics is a ConfigError."""
    path = Path(path)
    metrics = _json(path / "metrics.json")
    if require_finished and not metrics:
        raise ConfigError(
            f"{path} is not a finished run (no metrics.json); run it to the end first"
        )
    # The resolved config the run saved; else the CSV logger's resolved copy; else Hydra's,
    # whose `${hydra:...}` interpolations cannot be resolved outside the run.
    candidates = [
        path / "config.yaml",
        path / "csv" / "hparams.yaml",
        path / ".hydra" / "config.yaml",
    ]
    config_file = next((c for c in candidates if c.is_file()), None)
    config = OmegaConf.load(config_file) if config_file is not None else None
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    return Run(
        path=path,
        config=config,
        metrics=metrics,
        overrides=list(overrides or []),
        history=_read_history(path / "csv" / "metrics.csv"),
        device=_json(path / "device.json"),
        job=_json(path / "job.json"),
    )


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, text in raw.items():
                if text not in (None, ""):
                    try:
                        row[key] = float(text)
                    except ValueError:
                        continue
            rows.append(row)
    return rows


def median(values: list[float]) -> float:
    """Median of a non-empty list; NaN for an empty one."""
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

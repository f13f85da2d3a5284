"""Read finished runs back from their folders: config, final metrics, logged history, device.

A run folder is what `python run.py ... logger=csv` leaves behind:
`metrics.json` (final metrics), `csv/hparams.yaml` (the resolved config),
`csv/metrics.csv` (every logged value) and `device.json` (the hardware).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from odelab.errors import ConfigError


@dataclass
class Run:
    """One finished run, loaded from its folder."""

    path: Path
    config: DictConfig
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)

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
    def train_steps(self) -> int:
        steps, _ = self.series("train/loss_step")
        return max(steps) + 1 if steps else 0


def load_run(path: str | Path) -> Run:
    """Load a run folder; it must hold `metrics.json` and `csv/hparams.yaml` (run with logger=csv)."""
    path = Path(path)
    hparams = path / "csv" / "hparams.yaml"
    if not (path / "metrics.json").is_file() or not hparams.is_file():
        raise ConfigError(
            f"{path} is not a finished run with a CSV log (needs metrics.json and "
            "csv/hparams.yaml); make the run with logger=csv"
        )
    metrics = json.loads((path / "metrics.json").read_text())
    config = OmegaConf.load(hparams)
    device_file = path / "device.json"
    device = json.loads(device_file.read_text()) if device_file.is_file() else {}
    return Run(path, config, metrics, _read_history(path / "csv" / "metrics.csv"), device)


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

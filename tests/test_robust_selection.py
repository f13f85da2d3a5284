"""Issue 41: robustness checkpoints are selected on noisy validation images, never on test."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from odelab.errors import ConfigError
from odelab.train import run

SMALL = [
    "experiment=robust_cnn",
    "model.net.channels=4",
    "data.batch_size=32",
    "data.eval_batch_size=50",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=csv",
    "model.optimizer.lr=3e-2",
]


def _noisy_val_by_epoch(output_dir: Path) -> dict[int, float]:
    rows = {}
    for path in output_dir.rglob("metrics.csv"):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get("val/acc_noisy"):
                    rows[int(row["epoch"])] = float(row["val/acc_noisy"])
    return rows


def test_test_ckpt_best_tests_the_best_noisy_validation_epoch(make_cfg) -> None:
    select = [
        "model.val_noise_sigma=75",
        "callbacks.model_checkpoint.monitor=val/acc_noisy",
        "callbacks.model_checkpoint.mode=max",
        "test_ckpt=best",
    ]
    cfg = make_cfg(*SMALL, *select, subdir="best")
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    noisy = _noisy_val_by_epoch(out)
    assert sorted(noisy) == [0, 1, 2]
    # Lightning keeps the first epoch of a tie, as max() over epochs in order does.
    best = max(noisy, key=lambda e: (noisy[e], -e))
    assert best != 2, "this tiny setup should peak before its last epoch (else no test)"
    again = run(
        make_cfg(
            *SMALL,
            "train=false",
            f"ckpt_path={out / 'checkpoints' / f'epoch_{best:03d}.ckpt'}",
            subdir="again",
        )
    )
    assert metrics["test/acc"] == pytest.approx(again["test/acc"])


def test_test_ckpt_best_needs_a_validation_monitor(make_cfg) -> None:
    with pytest.raises(ConfigError, match="callbacks.model_checkpoint.monitor"):
        run(make_cfg(*SMALL, "test_ckpt=best", subdir="nomonitor"))
    with pytest.raises(ConfigError, match="val_noise_sigma"):
        run(make_cfg(*SMALL, "model.val_noise_sigma=-1", subdir="negative"))

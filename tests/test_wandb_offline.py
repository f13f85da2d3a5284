"""An offline W&B run keeps the resolved config, tags, group and the task's plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from odelab.train import run


@pytest.mark.slow
def test_offline_wandb_run_has_config_and_image(
    make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    # Loggers are off in fast_dev_run, so run one real (tiny) epoch instead.
    cfg = make_cfg(
        "logger=wandb",
        "trainer.max_epochs=1",
        "data.batches_per_epoch=2",
        "data.batch_time=5",
        "callbacks.model_checkpoint.save_last=false",
    )
    run(cfg)
    import wandb

    wandb.teardown()  # waits until W&B's service process has written the run's files
    (run_dir,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    images = sorted(
        p.name for p in (run_dir / "files" / "media" / "images" / "plots").glob("*.png")
    )
    assert [name.split("_")[0] for name in images] == ["phase", "trajectories", "vector"]
    # Offline runs keep config, tags and group in the run's record stream until `wandb sync`.
    (stream,) = run_dir.glob("run-*.wandb")
    data = stream.read_bytes()
    assert b'"batches_per_epoch":2' in data and b'"batch_time":5' in data
    assert str(cfg.paths.output_dir).encode() in data
    for tag in ("spiral", "dopri5", "direct"):
        assert tag.encode() in data

"""The spiral experiment: reproducibility, resuming, and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from odelab.errors import ConfigError
from odelab.train import run

SMALL = [
    "experiment=spiral",
    "data.batches_per_epoch=5",
    "data.n_points=200",
    "data.extrapolate_to=27",
]


def quality(metrics: dict[str, float]) -> dict[str, float]:
    """Every metric except wall-clock times, which differ between runs."""
    return {k: v for k, v in metrics.items() if "time" not in k}


def test_same_seed_gives_identical_metrics(make_cfg) -> None:
    first = run(make_cfg(*SMALL, "seed=3", "trainer.max_epochs=2", subdir="a"))
    second = run(make_cfg(*SMALL, "seed=3", "trainer.max_epochs=2", subdir="b"))
    assert quality(first) == quality(second)
    other = run(make_cfg(*SMALL, "seed=4", "trainer.max_epochs=2", subdir="c"))
    assert quality(other) != quality(first)


def test_resumed_run_ends_like_an_uninterrupted_one(make_cfg, tmp_path: Path) -> None:
    # The first half stops after 2 of 4 epochs; its lr schedule is the 4-epoch one.
    four_epochs = "model.scheduler.T_max=20"
    straight = run(make_cfg(*SMALL, four_epochs, "trainer.max_epochs=4", subdir="straight"))
    run(make_cfg(*SMALL, four_epochs, "trainer.max_epochs=2", subdir="first_half"))
    ckpt = tmp_path / "first_half" / "checkpoints" / "epoch_001.ckpt"
    assert ckpt.is_file()
    resumed = run(
        make_cfg(*SMALL, four_epochs, "trainer.max_epochs=4", f"ckpt_path={ckpt}", subdir="resumed")
    )
    for key in ("val/traj_mae", "test/traj_mae", "test/field_rel_err", "train/loss"):
        assert resumed[key] == straight[key], key


def test_run_writes_plots_checkpoints_and_metrics(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*SMALL, "trainer.max_epochs=1", subdir="out"))
    out = tmp_path / "out"
    assert {p.name for p in (out / "plots").glob("*.png")} == {
        "trajectories.png",
        "phase_portrait.png",
        "vector_field.png",
    }
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.noise_std=-0.1", "data.noise_std"),
        ("data.t_end=0", "data.t_end"),
        ("model.field.dim=3", "model.field"),
        ("data.batch_time=1", "data.batch_time"),
        # A callback entry without _target_ is an error, not silently skipped.
        ("+callbacks.extra.every_n=3", "callbacks.extra"),
    ],
)
def test_bad_input_names_the_key(make_cfg, override: str, key: str) -> None:
    cfg = make_cfg(*SMALL, "trainer.max_epochs=1", override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(cfg)


@pytest.mark.parametrize(
    "logger,pattern", [("csv", "csv/metrics.csv"), ("tensorboard", "tensorboard/events.*")]
)
def test_file_loggers_record_metrics(make_cfg, tmp_path: Path, logger: str, pattern: str) -> None:
    run(make_cfg(*SMALL, "trainer.max_epochs=1", f"logger={logger}", subdir="out"))
    assert list((tmp_path / "out").glob(pattern)), f"{logger} wrote nothing"


@pytest.mark.parametrize("noise,learned", [(0.0, False), (0.1, True)])
def test_window_starts_are_learned_on_noisy_data(
    make_cfg, tmp_path: Path, noise: float, learned: bool
) -> None:
    import torch

    cfg = make_cfg(*SMALL, "trainer.max_epochs=1", f"data.noise_std={noise}")
    run(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)[
        "state_dict"
    ]
    assert ("initial_states" in state) == learned
    if learned:
        # Initialised at the noisy observations, then moved by training.
        from hydra.utils import instantiate

        data = instantiate(cfg.data)
        data.setup()
        assert state["initial_states"].shape == data.trajectory.observed.shape
        assert not torch.equal(state["initial_states"], data.trajectory.observed)

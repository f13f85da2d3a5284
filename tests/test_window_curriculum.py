"""Training windows grow with the epoch when `data.batch_time_final` is set."""

from __future__ import annotations

import pytest
import torch

from odelab.data.trajectories import TrajectoryDataModule, window_length
from odelab.errors import ConfigError
from odelab.systems import DampedLinear


def test_window_length_grows_linearly_then_stays() -> None:
    lengths = [window_length(e, start=10, final=40, growth_epochs=3) for e in range(6)]
    assert lengths == [10, 20, 30, 40, 40, 40]
    assert window_length(5, start=10, final=None, growth_epochs=3) == 10


def test_loader_serves_the_epochs_window_length() -> None:
    data = TrajectoryDataModule(
        DampedLinear(),
        n_points=60,
        t_end=5.0,
        batch_time=4,
        batch_time_final=12,
        batch_time_growth_epochs=2,
        batch_size=3,
        batches_per_epoch=2,
        seed=1,
    )
    data.setup("fit")
    loader = data.train_dataloader()
    observed = data.trajectory.observed
    for epoch, length in ((0, 4), (1, 8), (2, 12), (7, 12)):
        loader.sampler.set_epoch(epoch)  # what Lightning does each epoch
        for t, windows, _ in loader:
            assert t.shape == (length,) and windows.shape == (length, 3, 2)
            assert torch.equal(t, data.trajectory.t[:length])
            # Every window is a run of consecutive observations.
            starts = [int((observed == w0).all(-1).nonzero()[0]) for w0 in windows[0]]
            for b, s in enumerate(starts):
                assert torch.equal(windows[:, b], observed[s : s + length])


def test_final_window_longer_than_the_data_is_rejected() -> None:
    with pytest.raises(ConfigError, match="data.batch_time_final"):
        TrajectoryDataModule(DampedLinear(), n_points=20, batch_time_final=30)


def test_lightning_draws_new_windows_and_lengths_each_epoch(make_cfg) -> None:
    import lightning as L
    from hydra.utils import instantiate

    cfg = make_cfg(
        "experiment=spiral",
        "data.n_points=60",
        "data.batch_time=4",
        "data.batch_time_final=8",
        "data.batch_time_growth_epochs=2",
        "data.batches_per_epoch=2",
        "data.batch_size=3",
        "solver=rk4",
        "solver.step_size=null",
    )
    seen: list[tuple[int, torch.Tensor]] = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            seen.append((trainer.current_epoch, batch[1]))

    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[Recorder()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    assert [(e, w.shape[0]) for e, w in seen] == [(0, 4), (0, 4), (1, 6), (1, 6), (2, 8), (2, 8)]
    first_points = [w[0] for _, w in seen]
    assert not torch.equal(first_points[0], first_points[2])  # epoch 1 is not a replay of epoch 0

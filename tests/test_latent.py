"""Latent ODE and its recurrent baselines on irregularly sampled series."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from odelab.data.periodic import IrregularBatch, PeriodicDataModule
from odelab.errors import ConfigError
from odelab.models.latent import ObservationRNN, gaussian_kl
from odelab.ode import Solver
from odelab.tasks.latent import LatentODE, RecurrentForecaster
from odelab.train import run

SMALL_DATA = ["data.n_train=20", "data.n_val=10", "data.n_test=10", "data.batch_size=10"]
# Tight solves everywhere: batching may then only change results at this level.
TIGHT = ["solver.rtol=1e-7", "solver.atol=1e-8"]


def _data(**kwargs: object) -> PeriodicDataModule:
    dm = PeriodicDataModule(
        n_train=12,
        n_val=4,
        n_test=4,
        grid_size=51,
        n_observed=12,
        n_future=6,
        batch_size=6,
        **kwargs,
    )
    dm.setup()
    return dm


def test_training_order_is_seeded() -> None:
    """Each training loader shuffles the series by the data seed, whatever torch's global RNG;
    evaluation keeps the split's order in batches of `batch_size`."""

    def order(dm: PeriodicDataModule) -> list[int]:
        torch.manual_seed(len(seen))  # the global RNG differs on every call
        return torch.cat([b.index for b in dm.train_dataloader()]).tolist()

    seen: list[list[int]] = []
    dm = _data(seed=3)
    seen += [order(dm), order(dm), order(_data(seed=4))]
    assert seen[0] == seen[1] != seen[2]
    assert sorted(seen[0]) == list(range(12))
    val = [b.index.tolist() for b in dm.val_dataloader()]
    assert val == [[0, 1, 2, 3]] and dm.val_dataloader().batch_size == 6


def _model(make_cfg, experiment: str, *overrides: str) -> LatentODE | RecurrentForecaster:
    cfg = make_cfg(f"experiment={experiment}", *overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=latent_ode"],
        ["experiment=latent_ode", "model.encoder.rnn.evolve=gaps", "sensitivity=adjoint"],
        ["experiment=ode_rnn"],
        ["experiment=rnn_baseline"],
        ["experiment=latent_ode", "data=sunspots"],
    ],
    ids=["latent_ode", "latent_ode_rnn_encoder_adjoint", "ode_rnn", "rnn_baseline", "sunspots"],
)
def test_fast_dev_run(make_cfg, tmp_path: Path, overrides: list[str]) -> None:
    small = [] if "data=sunspots" in overrides else SMALL_DATA
    metrics = run(make_cfg(*overrides, *small, "trainer.fast_dev_run=true"))
    for key in ("test/interp_mse", "test/extrap_mse"):
        assert math.isfinite(metrics[key]), key
    if "experiment=latent_ode" in overrides:
        assert math.isfinite(metrics["test/iwae"]) and math.isfinite(metrics["test/elbo"])
        assert metrics["train/nfe_forward"] > 0
        assert {p.name for p in (tmp_path / "run" / "plots").glob("*.png")} == {
            "posterior_samples.png",
            "extrapolation.png",
        }
    if "model.encoder.rnn.evolve=gaps" in overrides:
        assert metrics["train/nfe_backward"] > 0  # the adjoint solve ran


def test_kl_of_identical_gaussians_is_zero_and_matches_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    mu, std = torch.randn(5, 3, generator=gen), torch.rand(5, 3, generator=gen) + 0.1
    assert torch.allclose(gaussian_kl(mu, std, mu, std), torch.zeros(5), atol=1e-6)
    # KL(N(1, 2^2) || N(0, 1)) = (4 + 1 - 1 - log 4) / 2 per dimension.
    one, two = torch.ones(1, 2), 2 * torch.ones(1, 2)
    expected = 2 * 0.5 * (4 + 1 - 1 - math.log(4))
    kl = gaussian_kl(one, two, torch.zeros(1, 2), torch.ones(1, 2))
    assert kl.item() == pytest.approx(expected)


def _perturb(batch: IrregularBatch, where: torch.Tensor) -> IrregularBatch:
    """A copy whose values at `where` (B, T) are replaced by large random numbers."""
    noise = 100 * torch.randn(batch.values.shape, generator=torch.Generator().manual_seed(1))
    values = torch.where(where[..., None], noise, batch.values)
    return IrregularBatch(**{**vars(batch), "values": values})


def _loss(model: LatentODE | RecurrentForecaster, batch: IrregularBatch) -> torch.Tensor:
    torch.manual_seed(0)  # the same posterior sample for both calls
    out = model.training_loss(batch)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("experiment", ["latent_ode", "ode_rnn", "rnn_baseline"])
def test_masking_drops_unobserved_points(make_cfg, experiment: str) -> None:
    model = _model(make_cfg, experiment)
    batch = _data().splits["train"].__getitems__(range(6))
    padding = ~batch.target
    assert padding.any()  # the union has columns some series do not have
    with torch.no_grad():
        before = _loss(model, batch)
        assert torch.equal(before, _loss(model, _perturb(batch, padding)))
        # A scored point does change the loss: the test can fail.
        assert not torch.equal(before, _loss(model, _perturb(batch, batch.extrap)))


def test_encoder_sees_only_the_observed_points(make_cfg) -> None:
    model = _model(make_cfg, "latent_ode")
    batch = _data().splits["val"].__getitems__(range(4))
    with torch.no_grad():
        mean, std = model.encode(batch)
        hidden = _perturb(batch, batch.interp | batch.extrap)
        mean2, std2 = model.encode(hidden)
        assert torch.equal(mean, mean2) and torch.equal(std, std2)
        changed = model.encode(_perturb(batch, batch.context))[0]
        assert not torch.allclose(mean, changed)


@pytest.mark.parametrize("experiment", ["ode_rnn", "rnn_baseline"])
def test_baselines_never_read_scored_values(make_cfg, experiment: str) -> None:
    model = _model(make_cfg, experiment)
    batch = _data().splits["val"].__getitems__(range(4))
    with torch.no_grad():
        pred, _ = model.predict(batch)
        hidden, _ = model.predict(_perturb(batch, batch.interp | batch.extrap))
        assert torch.equal(pred, hidden)
        assert not torch.allclose(pred, model.predict(_perturb(batch, batch.context))[0])


def test_ode_rnn_with_zero_gaps_equals_its_gru_cell() -> None:
    torch.manual_seed(0)
    rnn = ObservationRNN(2, 8, evolve="ode", solver=Solver("dopri5"))
    times = torch.full((5,), 0.7)
    values = torch.randn(3, 5, 2)
    observe = torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad():
        _, h = rnn(times, values, observe)
        expected = torch.zeros(3, 8)
        for i in range(5):
            x = torch.cat([values[:, i], torch.ones(3, 1), torch.zeros(3, 1)], -1)
            expected = rnn.cell(x, expected)
    assert rnn.block.nfe_forward == 0
    torch.testing.assert_close(h, expected)
    # With real gaps the ODE does act: the same inputs give another state.
    with torch.no_grad():
        moved = rnn(torch.linspace(0, 2, 5), values, observe)[1]
    assert not torch.allclose(moved, expected, atol=1e-3)


@pytest.mark.parametrize("evolve", ["ode", "gaps"])
def test_batched_series_match_series_alone(make_cfg, evolve: str) -> None:
    tight_encoder = [
        "model.encoder.rnn.solver.method=dopri5",
        "model.encoder.rnn.solver.rtol=1e-7",
        "model.encoder.rnn.solver.atol=1e-8",
    ]
    model = _model(
        make_cfg, "latent_ode", f"model.encoder.rnn.evolve={evolve}", *TIGHT, *tight_encoder
    )
    batch = _data().splits["test"].__getitems__([0, 1, 2])
    alone = [batch.select([i]) for i in range(3)]
    assert all(a.times.numel() < batch.times.numel() for a in alone)  # different grids
    with torch.no_grad():
        together = model.posterior_log_likelihood(batch)
        separate = torch.cat([model.posterior_log_likelihood(a) for a in alone])
    torch.testing.assert_close(together, separate, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("experiment", ["ode_rnn", "rnn_baseline"])
def test_baseline_predictions_do_not_depend_on_the_batch(make_cfg, experiment: str) -> None:
    model = _model(make_cfg, experiment, "solver=dopri5", *TIGHT)
    batch = _data().splits["test"].__getitems__([0, 1, 2])
    with torch.no_grad():
        pred, _ = model.predict(batch)
        for i in range(3):
            one = batch.select([i])
            alone, _ = model.predict(one)
            cols = torch.searchsorted(batch.times, one.times)
            mask = one.target[0]
            torch.testing.assert_close(pred[i, cols][mask], alone[0][mask], rtol=1e-4, atol=1e-5)


def test_fixed_test_set_and_seeded_training_series() -> None:
    a, b, c = _data(seed=0), _data(seed=0), _data(seed=1)
    assert torch.equal(a.splits["test"].values, c.splits["test"].values)
    assert torch.equal(a.splits["train"].values, b.splits["train"].values)
    assert not torch.equal(a.splits["train"].values, c.splits["train"].values)
    assert not torch.equal(a.splits["train"].context, c.splits["train"].context)
    # Every series observes n_observed points of the window, 20 % of them held out.
    split = a.splits["train"]
    assert (split.context.sum(1) + split.interp.sum(1) == 12).all()
    assert (split.interp.sum(1) == 2).all() and (split.extrap.sum(1) == 6).all()


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.n_observed=500", "data.n_observed"),
        ("data.noise_std=-1", "data.noise_std"),
        ("data.interp_fraction=1.5", "data.interp_fraction"),
        ("model.encoder.rnn.evolve=lstm", "model.encoder.rnn.evolve"),
        ("model.obs_std=0", "model.obs_std"),
        ("model.decoder.latent_dim=4", "model.decoder.latent_dim"),
        ("model.encoder.latent_dim=4", "model.encoder.latent_dim"),
    ],
)
def test_bad_values_name_their_key(make_cfg, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(make_cfg("experiment=latent_ode", *SMALL_DATA, override, "trainer.fast_dev_run=true"))


def test_checkpoints_from_before_the_model_split_load(make_cfg) -> None:
    """A state dict with the pre-issue-45 keys (networks built inside the task) loads through
    the checkpoint hook into the same weights."""
    model = _model(make_cfg, "latent_ode")
    new = model.state_dict()
    inverse = {v: k for k, v in LatentODE.LEGACY_KEYS.items()}
    old = {}
    for key, value in new.items():
        prefix = next(p for p in [*inverse, ""] if key.startswith(p))
        old[(inverse[prefix] + key[len(prefix) :]) if prefix else key] = value + 1.0
    assert "to_posterior.weight" in old and "decoder.func.field.net.0.weight" not in new
    checkpoint = {"state_dict": old}
    fresh = _model(make_cfg, "latent_ode")
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, new[key] + 1.0)

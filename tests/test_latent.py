"""Latent ODE and its recurrent baselines on irregularly sampled series."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from odelab.data.irregular import IrregularBatch
from odelab.data.periodic import PeriodicDataModule
from odelab.errors import ConfigError
from odelab.models.latent import ObservationRNN, gaussian_kl
from odelab.ode import Solver
from odelab.tasks.latent import LatentODE, RecurrentForecaster
from odelab.train import run

SMALL_DATA = ["data.n_train=20", "data.n_val=10", "data.n_test=10", "data.batch_size=10"]
# Tight solves everywhere: batching may then only change results at this level.
TIGHT = ["solver.rtol=1e-7", "solver.atol=1e-8"]


SMALL = dict(n_train=12, n_val=4, n_test=4, grid_size=51, n_observed=12, n_future=6, batch_size=6)


def _data(**kwargs: object) -> PeriodicDataModule:
    """A set-up PeriodicDataModule: the small settings, then `kwargs` over them."""
    dm = PeriodicDataModule(**{**SMALL, **kwargs})
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
    # The future points binned by time since the last observation average back to extrap_mse.
    gaps = json.loads((tmp_path / "run" / "extrap_by_gap.json").read_text())
    count = np.array(gaps["count"])
    mse = np.array([m if m is not None else 0.0 for m in gaps["mse"]])
    assert len(gaps["edges"]) == len(count) + 1 and gaps["edges"][0] == 0.0
    assert (count * mse).sum() / count.sum() == pytest.approx(metrics["test/extrap_mse"], rel=1e-4)
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


# The reference protocol (issue 41): YuliaRubanova/latent_ode, switches of odelab's own code.
AUTHORS = ["model=latent_ode_authors", "data=periodic_authors"]


AUTHORS_DATA = dict(
    n_train=8,
    n_val=2,
    n_test=4,
    t_end=5.05,
    grid_size=101,
    grid="random",
    observe="first_half",
    n_observed=None,
    interp_fraction=0.0,
    n_future=None,
    noise="uniform",
    noise_std=0.01,
    amplitude=[1.0, 1.0],
    frequency=[0.4, 0.8],
    phase="zero",
    offset=1.0,
    offset_std=0.1,
    batch_size=4,
)


def _authors_data(**kwargs: object) -> PeriodicDataModule:
    return _data(**{**AUTHORS_DATA, **kwargs})


def test_authors_periodic_data_are_the_reference_generator() -> None:
    """Shared random times, the first half observed, unit sines of phase 0 with an offset
    and a frequency in [0.4, 0.8], non-negative uniform noise but at t = 0."""
    dm = _authors_data()
    split = dm.splits["train"]
    t = split.t
    assert t.numel() == 101 and t[0] == 0 and bool((t.diff() >= 0).all()) and t[-1] <= 5.05
    assert torch.equal(t, dm.splits["test"].t)
    assert (split.context[:, :50]).all() and not split.context[:, 50:].any()
    assert (split.extrap[:, 50:]).all() and not split.extrap[:, :50].any()
    assert not split.interp.any() and dm.t_observed == pytest.approx(float(t[49]))
    noise = split.values - split.truth
    assert bool((noise[:, 0] == 0).all()) and 0 <= noise.min() and noise.max() < 0.01
    assert noise[:, 1:].mean() == pytest.approx(0.005, abs=1e-3)
    # Minus its value at t = 0 (the offset), each series is sin(2 pi f t) for an f in range.
    wave = (split.truth - split.truth[:, :1])[..., 0]
    freqs = torch.linspace(0.4, 0.8, 40001)
    fits = torch.sin(2 * math.pi * freqs[:, None] * t).double()
    for row in wave.double():
        assert ((fits - row) ** 2).max(1).values.min() < 1e-6
    offsets = split.truth[:, 0, 0]
    assert not torch.allclose(offsets, torch.ones_like(offsets))  # 1 + N(0, 0.1) each


def test_decay_to_floor_matches_the_reference_loop() -> None:
    """run_models.py: lr = max(lr * 0.999, lr0 / 10) before every step."""
    from odelab.optim import StepDecayToFloor

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adamax([param], lr=1e-2)
    sched = StepDecayToFloor(opt, rate=0.999, floor=0.1)
    lr, ref, got = 1e-2, [], []
    for _ in range(3000):
        lr = max(lr * 0.999, 1e-3)
        ref.append(lr)
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx(ref, rel=1e-12)
    assert got[-1] == pytest.approx(1e-3)


def test_first_future_decoding_and_authors_elbo(make_cfg) -> None:
    """The solve starts at the first future time (there the mean is the readout of z0);
    only future points are scored; the loss is the reference's formula, recomputed here
    with torch.distributions."""
    from torch.distributions import Normal, kl_divergence

    model = _model(make_cfg, "latent_ode", *AUTHORS)
    batch = _authors_data().splits["train"].__getitems__(range(4))
    start = model.decode_start(batch)
    assert start == 50
    with torch.no_grad():
        mean, std = model.encode(batch)
        pred = model.decode_batch(mean, batch)
        torch.testing.assert_close(pred[:, start], model.decoder.readout(mean))
        assert (pred[:, :start] == 0).all()
        torch.manual_seed(3)
        loss, terms = model.training_loss(batch)
        samples = terms["samples"]  # (3, B, T, D)
        assert samples.shape[0] == 3
        lp = Normal(samples, model.obs_std).log_prob(batch.values)[..., 0]  # (K, B, T)
        future = batch.extrap
        per_series = (lp * future).sum(-1) / future.sum(-1)
        kl = kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).mean()
        weight = model.kl_weight()
        expected = -torch.logsumexp(per_series.mean(-1) - weight * kl, dim=0)
        torch.testing.assert_close(loss, expected)
        # Observed values move the loss only through the encoder; past ones unscored.
        assert not torch.equal(loss, _loss(model, _perturb(batch, batch.extrap)))


def test_authors_kl_schedule() -> None:
    """0 for 10 epochs, then 1 - 0.99^(epoch - 10), epoch = (step + 1) // batches."""
    from types import SimpleNamespace

    from odelab.tasks.latent import LatentODE as Task

    weights = {}
    for step in (0, 158, 159, 175, 16 * 30 - 1):
        fake = SimpleNamespace(
            kl_schedule="authors",
            _trainer=object(),
            trainer=SimpleNamespace(num_training_batches=16),
            global_step=step,
        )
        weights[step] = Task.kl_weight(fake)
    assert weights[0] == weights[158] == 0.0  # epoch 9 ends at step 158
    assert weights[159] == 0.0 and weights[175] == pytest.approx(1 - 0.99)
    assert weights[479] == pytest.approx(1 - 0.99**20)


@pytest.mark.parametrize(
    "experiment,model", [("ode_rnn", "ode_rnn_authors"), ("rnn_baseline", "rnn_authors")]
)
def test_authors_baselines_score_the_future_only(make_cfg, experiment: str, model: str) -> None:
    net = _model(make_cfg, experiment, f"model={model}", "data=periodic_authors")
    batch = _authors_data().splits["train"].__getitems__(range(4))
    with torch.no_grad():
        before = _loss(net, batch)
        # Observed values only steer the state; they are not scored themselves: a loss on
        # the future only moves when those change through the filter, never by their error.
        assert not torch.equal(before, _loss(net, _perturb(batch, batch.extrap)))
        shifted = IrregularBatch(**{**vars(batch), "extrap": torch.zeros_like(batch.extrap)})
        assert _loss(net, shifted) == 0  # nothing scored: zero loss


def test_observed_only_training_is_one_step_ahead_on_the_observed_points(make_cfg) -> None:
    """score_on=observed (the reference's ODE-RNN training): the loss is the mean squared
    one-step-ahead error over the observation window's points (observed and held-out) after
    each series' first observation, recomputed here series by series from the states the RNN
    gives before each point."""
    net = _model(make_cfg, "ode_rnn", "++model.score_on=observed")
    batch = _data().splits["train"].__getitems__(range(6))
    with torch.no_grad():
        loss = _loss(net, batch)
        pred, _ = net.predict(batch)
        scored = torch.zeros_like(batch.context)
        for i in range(len(batch)):
            first = int(batch.context[i].nonzero()[0])
            window = batch.context[i] | batch.interp[i]
            scored[i, first + 1 :] = window[first + 1 :]
        assert (scored & batch.interp).any()  # held-out points are scored too
        err = ((pred - batch.values) ** 2)[scored]
        assert loss == pytest.approx(err.mean().item(), rel=1e-6)
        # The future window is never scored.
        assert torch.equal(loss, _loss(net, _perturb(batch, batch.extrap)))


def test_authors_protocol_runs(make_cfg) -> None:
    overrides = [*AUTHORS, "data.n_train=10", "data.n_val=5", "data.n_test=5"]
    metrics = run(make_cfg("experiment=latent_ode", *overrides, "trainer.fast_dev_run=true"))
    assert math.isfinite(metrics["test/extrap_mse"]) and "test/interp_mse" not in metrics


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.decode_from=first_future", "model.score_on"),
        ("model.score_on=observed", "model.score_on"),  # the baselines' option only
        ("model.elbo=iwae", "model.elbo"),
        ("model.kl_schedule=cosine", "model.kl_schedule"),
        ("data.phase=half", "data.phase"),
        ("data.noise=laplace", "data.noise"),
    ],
)
def test_bad_protocol_values_name_their_key(make_cfg, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(make_cfg("experiment=latent_ode", *SMALL_DATA, override, "trainer.fast_dev_run=true"))

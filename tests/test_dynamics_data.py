"""The dynamics study's data (issue 42) against independent truths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate import solve_ivp

from odelab.data.dynamics import DynamicsDataModule
from odelab.data.trajectories import truth_solve
from odelab.errors import ConfigError
from odelab.systems import DampedLinear, LotkaVolterra, Robertson, VanDerPol

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


@pytest.fixture(autouse=True)
def _private_truth_cache(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ODELAB_TRUTH_CACHE", str(tmp_path / "truth"))


def test_damped_linear_truth_matches_the_matrix_exponential() -> None:
    y0 = torch.tensor([[2.0, 0.0], [1.5, -0.5]], dtype=torch.float64)
    t = torch.linspace(0, 10, 21, dtype=torch.float64)
    got = truth_solve(DampedLinear(), y0, t)
    want = np.stack([y0.numpy() @ scipy.linalg.expm(A * s) for s in t.numpy()])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=1e-9)


def test_van_der_pol_truth_matches_an_independent_scipy_solve() -> None:
    mu = 10.0

    def f(t: float, y: np.ndarray) -> np.ndarray:
        return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    t = np.linspace(0, 30, 31)
    want = solve_ivp(f, (0, 30), [2.0, 0.0], method="LSODA", t_eval=t, rtol=1e-11, atol=1e-12).y.T
    got = truth_solve(VanDerPol(mu), torch.tensor([[2.0, 0.0]]), torch.from_numpy(t))[:, 0]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_lotka_volterra_truth_conserves_its_first_integral() -> None:
    # V = d x - g ln x + b y - a ln y is constant along every trajectory.
    t = torch.linspace(0, 12, 50, dtype=torch.float64)
    y = truth_solve(LotkaVolterra(), torch.tensor([[1.0, 1.0], [1.4, 0.6]]), t)
    x, p = y[..., 0], y[..., 1]
    v = x - 3 * torch.log(x) + p - 1.5 * torch.log(p)
    assert (v - v[0]).abs().max() < 1e-8


def test_robertson_truth_conserves_mass_and_is_stiff_but_solved() -> None:
    t = torch.cat((torch.zeros(1), torch.logspace(-5, 5, 49))).double()
    y = truth_solve(Robertson(), torch.tensor([[1.0, 0.0, 0.0]]), t)[:, 0]
    assert (y.sum(-1) - 1).abs().max() < 1e-9
    assert (y >= -1e-12).all()
    # The known solution: y2 peaks near 3.6e-5 and y1 has fallen to ~0.018 by t = 1e5.
    assert 3.5e-5 < y[:, 1].max() < 3.7e-5
    assert 0.015 < y[-1, 0] < 0.02


def _module(**kwargs: object) -> DynamicsDataModule:
    base = dict(
        system=DampedLinear(),
        y0=(2.0, 0.0),
        ic_box=(0.5, 0.5),
        n_train_traj=6,
        n_val_traj=1,
        n_test_traj=2,
        t_end=10.0,
        n_points=200,
        extrapolate_to=12.0,
    )
    base.update(kwargs)
    dm = DynamicsDataModule(**base)
    dm.setup()
    return dm


def test_splits_have_held_out_initial_conditions_and_an_extrapolation_window() -> None:
    dm = _module()
    train, test = dm.splits["train"], dm.splits["test"]
    assert train.true.shape == (240, 6, 2) and test.true.shape == (240, 2, 2)
    assert train.n_train == 200
    starts = torch.cat((train.true[0], test.true[0]))
    assert torch.cdist(starts, starts).add(torch.eye(8)).min() > 1e-3  # all different


def test_sparse_mask_really_drops_points_differently_per_trajectory() -> None:
    dense = _module().splits["train"]
    sparse = _module(keep_frac=0.2).splits["train"]
    assert dense.mask.all()
    kept = sparse.mask.sum(0)  # per trajectory
    assert ((kept > 0.1 * 200) & (kept < 0.3 * 200)).all()
    assert sparse.mask[0].all()  # every trajectory keeps its start
    assert not torch.equal(sparse.mask[:, 0], sparse.mask[:, 1])
    # A dropped point carries no observation: it is interpolated from the kept ones.
    noisy = _module(keep_frac=0.2, noise_frac=0.1).splits["train"]
    k = 0
    idx = torch.nonzero(~noisy.mask[:, k])[:, 0]
    kept_idx = torch.nonzero(noisy.mask[:, k])[:, 0]
    i = int(idx[(idx > kept_idx[0]) & (idx < kept_idx[-1])][0])
    lo, hi = kept_idx[kept_idx < i].max(), kept_idx[kept_idx > i].min()
    w = (noisy.t[i] - noisy.t[lo]) / (noisy.t[hi] - noisy.t[lo])
    expect = (1 - w) * noisy.observed[lo, k] + w * noisy.observed[hi, k]
    torch.testing.assert_close(noisy.observed[i, k], expect, rtol=1e-5, atol=1e-5)


def test_noise_frac_scales_with_the_state() -> None:
    for factor in (1.0, 10.0):
        dm = _module(y0=(2.0 * factor, 0.0), ic_box=(0.5 * factor, 0.5 * factor), noise_frac=0.05)
        train = dm.splits["train"]
        noise = train.observed - train.true[: train.n_train]
        ratio = noise.reshape(-1, 2).std(0) / train.state_scale
        torch.testing.assert_close(ratio, torch.full((2,), 0.05), rtol=0.1, atol=0.0)
        assert train.state_scale.min() > 0.5 * factor


def test_scale_divides_by_the_range_and_the_time_span() -> None:
    raw, scaled = _module().splits["train"], _module(scale=True).splits["train"]
    span = raw.true[:200].reshape(-1, 2)
    span = span.max(0).values - span.min(0).values
    torch.testing.assert_close(scaled.unit, span)
    torch.testing.assert_close(scaled.true * scaled.unit, raw.true, rtol=1e-5, atol=1e-5)
    assert float(scaled.t[199]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"keep_frac": 0.0}, "data.keep_frac"),
        ({"noise_frac": -0.1}, "data.noise_frac"),
        ({"n_train_traj": 0}, "data.n_train_traj"),
        ({"ic_box": (0.5,)}, "data.ic_box"),
        ({"log_time": True, "batch_time": 5}, "data.batch_time"),
        ({"batches_per_epoch": 0}, "data.batch_size"),
    ],
)
def test_bad_data_keys_name_the_key(kwargs: dict, key: str) -> None:
    base = dict(system=DampedLinear(), y0=(2.0, 0.0))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DynamicsDataModule(**{**base, **kwargs})

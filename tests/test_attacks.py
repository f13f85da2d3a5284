"""Attacks: valid pixels and exact eps balls, agreement with plain per-example loops, honesty
checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odelab.attacks import (
    FGSM,
    PGD,
    GaussianNoise,
    Square,
    accuracy,
    attack_sweep,
    attacked_accuracy,
    honesty_checks,
    largest_rise,
    merge_sweeps,
    never_rises,
    pgd_curve,
    with_solver,
    worst_case,
)
from odelab.errors import ConfigError
from odelab.models.fields import MLPField
from odelab.ode import ODEBlock, Sensitivity, Solver

SIDE = 10  # tiny images keep the per-example reference loops fast


class TinyODEClassifier(nn.Module):
    """Linear encoder, an ODE block (Euler), linear head: attacks must go through the solve."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.encode = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, dim))
        self.block = ODEBlock(
            MLPField(dim, 16, init_std=0.3),
            Solver("euler", None, None, step_size=0.25),
            Sensitivity(),
        )
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.encode(x)))


def tiny_odenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyODEClassifier().double().eval()


def batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIDE, SIDE, generator=gen, dtype=torch.float64), torch.randint(
        0, 10, (n,), generator=gen
    )


def input_grad_one(model: nn.Module, x: torch.Tensor, y: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x[None]), torch.tensor([y])).backward()
    return x.grad


def fgsm_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM written per example and per pixel bound, independently of odelab.attacks."""
    out = []
    for xi, yi in zip(x, y.tolist(), strict=False):
        step = eps * torch.sign(input_grad_one(model, xi, yi))
        out.append(torch.clamp(xi + step, 0.0, 1.0))
    return torch.stack(out)


def pgd_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int
) -> torch.Tensor:
    """PGD without random start, per example: the final iterate after `steps` steps."""
    out = []
    for xi, yi in zip(x, y.tolist(), strict=False):
        cur = xi.clone()
        for _ in range(steps):
            cur = cur + alpha * torch.sign(input_grad_one(model, cur, yi))
            cur = torch.where(cur > xi + eps, xi + eps, cur)
            cur = torch.where(cur < xi - eps, xi - eps, cur)
            cur = torch.where(
                cur > 1, torch.ones_like(cur), torch.where(cur < 0, torch.zeros_like(cur), cur)
            )
        out.append(cur)
    return torch.stack(out)


def test_fgsm_matches_plain_loop() -> None:
    model, (x, y) = tiny_odenet(), batch()
    assert torch.allclose(FGSM(0.1)(model, x, y), fgsm_loop(model, x, y, 0.1), atol=1e-12)


def test_pgd_matches_plain_loop() -> None:
    model, (x, y) = tiny_odenet(), batch()
    y = model(x).argmax(1)  # start correctly classified so the iterations matter
    ours = PGD(0.2, step_size=0.05, steps=6, random_start=False)(model, x, y)
    assert torch.allclose(ours, pgd_loop(model, x, y, 0.2, 0.05, 6), atol=1e-12)
    assert not torch.equal(ours, x)


@pytest.mark.parametrize(
    "attack",
    [
        FGSM(0.3),
        PGD(0.3, steps=3, restarts=2),
        PGD(0.05, steps=2),
        PGD(0.2, steps=3, select="best_loss"),
        FGSM(1.0),
        Square(0.2, queries=20),
    ],
)
def test_attacks_stay_in_pixel_range_and_eps_ball(attack) -> None:
    model, (x, y) = tiny_odenet(), batch()
    x[0, 0, :3] = 0.0  # pixels at the range edges must stay inside too
    x[0, 0, 3:6] = 1.0
    adv = attack(model, x, y)
    eps = attack.strength
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert torch.all(adv >= (x - eps).clamp(0, 1)) and torch.all(adv <= (x + eps).clamp(0, 1))
    assert (adv - x).abs().max() <= eps + 1e-12


def test_gaussian_noise_scale_and_range() -> None:
    x = torch.full((4, 1, 28, 28), 0.5)  # noise needs no model
    noisy = GaussianNoise(25.5)(nn.Identity(), x, torch.zeros(4, dtype=torch.long))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert abs((noisy - x).std().item() - 0.1) < 0.01  # sigma 25.5 on 0-255 = 0.1 on [0, 1]


def test_attack_sweep_names_rows_and_rejects_unknown_kind() -> None:
    assert list(attack_sweep("fgsm", [0.15, 0.3])) == ["fgsm_0.15", "fgsm_0.3"]
    assert attack_sweep("none") == {}
    with pytest.raises(ConfigError, match="attack.kind"):
        attack_sweep("cw", [1.0])
    with pytest.raises(ConfigError, match="attack.select"):
        PGD(0.1, select="any")


def test_study_attack_config_merges_noise_fgsm_and_pgd(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("experiment=robust_odenet", "attack=study")
    attacks = instantiate(cfg.attack)
    assert list(attacks) == [
        "gaussian_50",
        "gaussian_75",
        "gaussian_100",
        "fgsm_0.15",
        "fgsm_0.3",
        "fgsm_0.5",
        "pgd_0.2",
        "pgd_0.3",
    ]
    with pytest.raises(ConfigError, match="appear in two sweeps"):
        merge_sweeps([attack_sweep("fgsm", [0.3]), attack_sweep("fgsm", [0.3, 0.5])])


def test_attack_through_dopri5_differentiates_through_the_solver() -> None:
    model, (x, y) = tiny_odenet(), batch()
    twin = with_solver(model, Solver("dopri5", rtol=1e-6, atol=1e-6))
    assert twin.block.solver.method == "dopri5" and model.block.solver.method == "euler"
    adv = FGSM(0.05)(twin, x, y)
    assert not torch.equal(adv, x) and twin.block.nfe_backward == 0  # direct backprop, not adjoint


def bar_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k is a bright horizontal bar in row k on a faint noisy background."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.1 * torch.rand(n, 1, SIDE, SIDE, generator=gen)
    for i, k in enumerate(y.tolist()):
        x[i, 0, k, 1:9] = 0.9
    return x, y


@pytest.fixture(scope="module")
def trained_model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyODEClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = bar_images(200, seed=0)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def test_honesty_checks_pass_on_a_trained_model(trained_model) -> None:
    x, y = bar_images(40, seed=1)
    assert accuracy(trained_model, x, y) >= 0.9
    checks = honesty_checks(trained_model, x, y, steps=4)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]


class MaskedGradients(nn.Module):
    """Quantises its input: accurate, but every input gradient is zero (gradient masking)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 4).round() / 4)


def test_honesty_checks_catch_gradient_masking(trained_model) -> None:
    x, y = bar_images(40, seed=1)
    checks = {c.name: c for c in honesty_checks(MaskedGradients(trained_model), x, y, steps=4)}
    assert not checks["near zero at eps=0.5"].passed


class BandModel(nn.Module):
    """Two classes over the mean shift s of an image from 0.5: class 1 only for s near 0.1.

    Its loss gradient always points towards s = 0.1, so PGD with step 0.1 from s = 0
    lands in the band after one step and leaves it after the second: the final iterate
    of the longer attack is classified correctly again.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 0.5
        return torch.stack([0.5 - s, 1 - 200 * (s - 0.1) ** 2], dim=1)


def test_pgd_judges_the_final_iterate_so_more_steps_can_raise_accuracy() -> None:
    x, y = torch.full((4, 1, SIDE, SIDE), 0.5), torch.zeros(4, dtype=torch.long)
    model = BandModel()
    assert accuracy(model, x, y) == 1.0
    one = PGD(0.3, step_size=0.1, steps=1, random_start=False)
    two = PGD(0.3, step_size=0.1, steps=2, random_start=False)
    assert accuracy(model, one(model, x, y), y) == 0.0
    assert accuracy(model, two(model, x, y), y) == 1.0  # left the band: not broken
    # The best-loss iterate of the two-step run is the one inside the band.
    best = PGD(0.3, step_size=0.1, steps=2, random_start=False, select="best_loss")
    assert accuracy(model, best(model, x, y), y) == 0.0
    curve = pgd_curve(model, x, y, 0.3, 0.1, steps=(1, 2), restarts=(1,))
    # With random starts too, the two-step attack leaves most examples in the right class.
    assert curve[1]["acc"] > curve[0]["acc"] and not never_rises(curve)


def test_pgd_restarts_and_configurations_draw_fresh_seeded_starts() -> None:
    model, (x, y) = BandModel(), batch(6)
    starts: list[torch.Tensor] = []

    class Recorder(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            starts.append(z.detach().clone())
            return model(z) * 0 + torch.tensor([10.0, 0.0], dtype=z.dtype)  # never fooled

    y = torch.zeros(6, dtype=torch.long)
    PGD(0.1, steps=1, restarts=2)(Recorder(), x, y)
    first, second = starts[0], starts[2]  # restart 1 and 2 (each: one gradient + final pass)
    assert not torch.equal(first, second)
    starts.clear()
    PGD(0.1, steps=1, restarts=2)(Recorder(), x, y)
    assert torch.equal(starts[0], first)  # seeded: the same configuration repeats exactly
    starts.clear()
    PGD(0.1, steps=2, restarts=1)(Recorder(), x, y)
    assert not torch.equal(starts[0], first)  # another configuration, other starts


def test_square_attack_breaks_what_masked_gradients_hide(trained_model) -> None:
    x, y = bar_images(40, seed=1)
    masked = MaskedGradients(trained_model)
    pgd = attacked_accuracy(masked, PGD(0.5, steps=4), x, y)
    square = attacked_accuracy(masked, Square(0.5, queries=100), x, y)
    assert pgd >= 0.5 and square <= pgd - 0.3, (pgd, square)


def test_worst_case_is_the_minimum_over_sources(trained_model) -> None:
    x, y = bar_images(40, seed=1)
    sources = {"itself": trained_model, "masked": MaskedGradients(trained_model)}
    result = worst_case(trained_model, sources, FGSM(0.3), x, y)
    assert result["min"] == min(result["itself"], result["masked"])
    assert result["itself"] < result["masked"]  # masked gradients make a weak source


@pytest.mark.slow
def test_fgsm_and_pgd_agree_with_adversarial_robustness_toolbox(trained_model) -> None:
    """An independent implementation (ART, a dev dependency): the same FGSM accuracy; PGD
    without a random start gives the same adversarial images; with random starts the two
    draw different starts, so over five seeded starts each our mean accuracy is at most
    one image of 100 above ART's (as strong, within the spread of the starts)."""
    # A pinned dev dependency (`make install` installs it): missing is a failure, not a skip.
    import art
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    x, y = bar_images(100, seed=1)
    classifier = PyTorchClassifier(
        trained_model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, SIDE, SIDE),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    assert art.__version__ == "1.20.1"

    def art_pgd(eps: float, random_init: int) -> torch.Tensor:
        attack = ProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=eps / 4,
            max_iter=10,
            num_random_init=random_init,
            verbose=False,
        )
        return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

    state = np.random.get_state()  # ART draws its random start from numpy's global RNG
    try:
        for eps in (0.1, 0.2, 0.3):
            theirs = FastGradientMethod(classifier, eps=eps).generate(x.numpy(), y=y.numpy())
            assert accuracy(trained_model, FGSM(eps)(trained_model, x, y), y) == accuracy(
                trained_model, torch.from_numpy(theirs), y
            )
            ours = PGD(eps, step_size=eps / 4, steps=10, random_start=False)(trained_model, x, y)
            torch.testing.assert_close(ours, art_pgd(eps, 0), rtol=0, atol=1e-6)
            ours_acc, art_acc = [], []
            for seed in range(5):
                np.random.seed(seed)
                art_acc.append(accuracy(trained_model, art_pgd(eps, 1), y))
                attack = PGD(eps, step_size=eps / 4, steps=10, seed=seed)
                ours_acc.append(accuracy(trained_model, attack(trained_model, x, y), y))
            assert np.mean(ours_acc) <= np.mean(art_acc) + 0.01, (eps, ours_acc, art_acc)
    finally:
        np.random.set_state(state)


def test_largest_rise_compares_only_stronger_configurations() -> None:
    curve = [
        {"steps": 10, "restarts": 1, "acc": 0.40},
        {"steps": 20, "restarts": 1, "acc": 0.38},
        {"steps": 10, "restarts": 5, "acc": 0.45},  # not stronger than 20 x 1: not compared
        {"steps": 20, "restarts": 5, "acc": 0.41},
    ]
    # Rises: 10x5 over 10x1 by 0.05, 20x5 over 20x1 by 0.03 and over 10x1 by 0.01.
    assert abs(largest_rise(curve) - 0.05) < 1e-12 and not never_rises(curve)
    assert never_rises(curve, tolerance=0.05 + 1e-9)
    assert largest_rise([p for p in curve if p["acc"] != 0.45]) == pytest.approx(0.03)
    assert largest_rise(curve[:2]) == 0.0 and never_rises(curve[:2])

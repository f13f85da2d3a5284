"""Dissecting Neural ODEs: every variant runs, and each mechanism meets an independent truth."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from odelab.data.annuli import sample_annuli
from odelab.errors import ConfigError
from odelab.models.dissecting import (
    ConditionedField,
    DissectedNODE,
    MLPVectorField,
    SecondOrderField,
    basis_values,
)
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.reports.dissecting import VARIANTS
from odelab.train import run

SMALL = [
    "experiment=annuli",
    "trainer.fast_dev_run=true",
    "data.batch_size=16",
    "model.grid_size=8",
    "model.n_plot_points=16",
]


# A fixed-grid solver makes every solve's cost known in closed form: RK4 evaluates the field
# 4 times per step, and [0, 1] in steps of 0.25 is 4 steps (adaptive depth also solves on
# [0, 1], the horizon scaling the field).
FIXED_GRID = ["solver=rk4", "solver.step_size=0.25"]
RK4_NFE = 4 * 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs(make_cfg, variant: str) -> None:
    eval_batch = 32
    metrics = run(
        make_cfg(
            *SMALL,
            *FIXED_GRID,
            f"model/variant={variant}",
            f"data.eval_batch_size={eval_batch}",
            subdir=variant,
        )
    )
    # Every variant is one solve per batch (the augmentations, controls, horizon and integral
    # ride in the state), so each stage's NFE is exactly the solver's stages x steps.
    for key in ("train/nfe_forward", "val/nfe_forward", "test/nfe_forward"):
        assert metrics[key] == RK4_NFE, (variant, key, metrics[key])
    assert metrics["train/nfe_backward"] == 0  # direct gradients: no backward solve
    # Accuracy over one evaluation batch is a count of correct points out of that batch.
    correct = metrics["test/acc"] * eval_batch
    assert correct == pytest.approx(round(correct), abs=1e-4)
    assert not any(math.isnan(v) for v in metrics.values())


def test_each_variant_changes_the_vanilla_config(make_cfg) -> None:
    vanilla = make_cfg("experiment=annuli", subdir="vanilla").model.net
    for variant in VARIANTS[1:]:
        net = make_cfg("experiment=annuli", f"model/variant={variant}", subdir=variant).model.net
        assert net != vanilla, f"model/variant={variant} left the vanilla NODE unchanged"


def test_variant_runs_in_higher_dimension_with_the_adjoint(make_cfg) -> None:
    metrics = run(
        make_cfg(
            *SMALL,
            *FIXED_GRID,
            "model/variant=anode_integral",
            "data.dim=5",
            "sensitivity=adjoint",
        )
    )
    # The adjoint integrates the augmented system back over the same fixed grid.
    assert metrics["train/nfe_forward"] == RK4_NFE
    assert metrics["train/nfe_backward"] == RK4_NFE


def test_image_augmentations_run(make_cfg) -> None:
    for augment in ("zero", "input_layer", "higher_order"):
        cfg = make_cfg(
            "experiment=mnist_odenet",
            "model/net=odenet_augmented",
            f"model.net.augment={augment}",
            "model.net.channels=8",
            "model.net.augment_channels=8",
            "trainer.fast_dev_run=true",
            "data.batch_size=8",
            "data.eval_batch_size=8",
            *FIXED_GRID,
            subdir=augment,
        )
        metrics = run(cfg)
        # One ODE block: stages x steps forward, and as many for the adjoint's backward solve.
        assert metrics["test/nfe_forward"] == RK4_NFE, augment
        assert metrics["train/nfe_backward"] == RK4_NFE, augment


def _field(weights: str, terms: int) -> MLPVectorField:
    return MLPVectorField(dim=2, hidden=8, weights=weights, terms=terms).double()


def _solve(field: nn.Module, z0: Tensor) -> Tensor:
    block = ODEBlock(
        field, Solver("dopri5", rtol=1e-8, atol=1e-8), Sensitivity("direct"), t=(0.0, 1.0)
    )
    return block(z0)


@pytest.mark.parametrize(
    ("weights", "terms"), [("fourier", 1), ("polynomial", 1), ("chebyshev", 1), ("stacked", 1)]
)
def test_single_constant_term_equals_the_depth_invariant_node(weights: str, terms: int) -> None:
    torch.manual_seed(0)
    invariant = _field("constant", 1)
    for p in invariant.parameters():  # far from the init: a real check, not zeros against zeros
        p.data.normal_()
    variant = _field(weights, terms)
    variant.load_state_dict(invariant.state_dict())
    z0 = torch.randn(16, 2, dtype=torch.float64)
    assert torch.allclose(_solve(variant, z0), _solve(invariant, z0), atol=1e-6, rtol=0)


def test_more_terms_make_the_field_depth_variant() -> None:
    torch.manual_seed(0)
    field = _field("chebyshev", 3)
    for p in field.parameters():
        p.data.normal_()
    z = torch.randn(4, 2, dtype=torch.float64)
    assert not torch.allclose(field(torch.tensor(0.1), z), field(torch.tensor(0.9), z))
    # The basis: T_2(2s - 1) at s = 0.75 is 2 * 0.25 - 1.
    assert basis_values("chebyshev", 3, torch.tensor(0.75))[2].item() == pytest.approx(-0.5)


def _integral_net(method: str) -> DissectedNODE:
    torch.manual_seed(1)
    field = partial(MLPVectorField, hidden=4)  # as Hydra's _partial_ builds it
    net = DissectedNODE(
        field,
        Solver("dopri5", rtol=1e-10, atol=1e-10),
        Sensitivity(method, rtol=1e-10, atol=1e-10),
        in_dim=2,
        augment="zero",
        augment_dim=1,
        integral_weight=1.0,
    )
    return net.double()


def _integral_loss(net: DissectedNODE, x: Tensor, y: Tensor) -> Tensor:
    logits = net(x, y)
    return nn.functional.cross_entropy(logits, y) + net.last_integral.mean()


def test_integral_loss_gradients_adjoint_direct_and_finite_differences() -> None:
    x, y = sample_annuli(6, 2, seed=0)
    x = x.double()
    grads = {}
    for method in ("adjoint", "direct"):
        net = _integral_net(method)
        loss = _integral_loss(net, x, y)
        assert net.last_integral is not None and bool((net.last_integral > 0).all())
        grads[method] = torch.autograd.grad(loss, list(net.parameters()))
    for a, d in zip(grads["adjoint"], grads["direct"], strict=True):
        assert torch.allclose(a, d, atol=1e-7, rtol=1e-5)
    # Central differences on a few weights of the first field layer.
    net = _integral_net("direct")
    weight = net.field.layers[0].weight
    analytic = grads["direct"][
        [n for n, _ in net.named_parameters()].index("dynamics.field.layers.0.weight")
    ]
    eps = 1e-6
    for index in [(0, 0, 0), (0, 2, 1), (0, 3, 2)]:
        with torch.no_grad():
            weight[index] += eps
            up = _integral_loss(net, x, y).item()
            weight[index] -= 2 * eps
            down = _integral_loss(net, x, y).item()
            weight[index] += eps
        assert (up - down) / (2 * eps) == pytest.approx(analytic[index].item(), rel=1e-5, abs=1e-8)


def test_integral_term_matches_the_running_loss_quadrature() -> None:
    # Without training the integral equals a trapezoid quadrature of the readout's CE on the path.
    net = _integral_net("direct")
    x, y = sample_annuli(4, 2, seed=3)
    x = x.double()
    with torch.no_grad():
        net(x, y)
        path = net.trajectory(x, 401)
        ce = torch.stack(
            [nn.functional.cross_entropy(net.readout(z), y, reduction="none") for z in path]
        )
        quadrature = torch.trapezoid(ce, dx=1.0 / 400, dim=0)
    assert torch.allclose(net.last_integral, quadrature, atol=1e-5)


def test_adaptive_depth_gives_inputs_their_own_horizon_and_learns_it() -> None:
    torch.manual_seed(0)
    field = partial(MLPVectorField, hidden=8)
    for method in ("direct", "adjoint"):
        net = DissectedNODE(
            field,
            Solver("dopri5", rtol=1e-6, atol=1e-6),
            Sensitivity(method),
            in_dim=2,
            adaptive_depth=True,
        )
        x, y = sample_annuli(32, 2, seed=0)
        horizons = net.horizon(x)
        assert bool((horizons > 0).all()) and horizons.std() > 1e-3
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        depth_grads = [p.grad for p in net.depth_net.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in depth_grads), method


class ConstantField(nn.Module):
    """dz/dt = c whatever the state: z(T) = z(0) + T c in closed form."""

    def __init__(self, dim: int, control_dim: int = 0, t_end: float = 1.0):
        super().__init__()
        self.c = torch.arange(1.0, dim + 1.0, dtype=torch.float64)

    def forward(self, t: Tensor, z: Tensor, control: Tensor | None = None) -> Tensor:
        return self.c.expand_as(z)


def test_adaptive_depth_solves_each_input_to_its_own_horizon() -> None:
    torch.manual_seed(0)
    net = DissectedNODE(
        ConstantField, Solver("dopri5", rtol=1e-9, atol=1e-9), in_dim=2, adaptive_depth=True
    ).double()
    x = sample_annuli(16, 2, seed=1)[0].double()
    c = net.field.c
    with torch.no_grad():
        before, horizon = net.solve(x)[0], net.horizon(x)
        # The final state sits at x + T(x) c: the solve on [0, 1] really runs to T(x).
        assert torch.allclose(before, x + horizon * c, atol=1e-7)
        net.depth_net[-1].bias.add_(3.0)  # a larger learned horizon for every input ...
        after = net.solve(x)[0]
    # ... moves every final state further along c.
    assert bool((((after - x) @ c) > ((before - x) @ c) + 1e-3).all())


def test_second_order_field_integrates_a_harmonic_oscillator() -> None:
    omega = 2.0

    def spring(t: Tensor, z: Tensor) -> Tensor:
        return -(omega**2) * z[:, :1]

    q0, p0 = (
        torch.tensor([[0.7], [-0.2]], dtype=torch.float64),
        torch.tensor([[0.1], [1.5]], dtype=torch.float64),
    )
    t = 1.3
    block = ODEBlock(
        SecondOrderField(spring, 1), Solver("dopri5", rtol=1e-10, atol=1e-10), t=(0.0, t)
    )
    out = block(torch.cat([q0, p0], dim=1))
    q = q0 * math.cos(omega * t) + p0 / omega * math.sin(omega * t)
    p = -q0 * omega * math.sin(omega * t) + p0 * math.cos(omega * t)
    assert torch.allclose(out, torch.cat([q, p], dim=1), atol=1e-8)


def test_annuli_are_seeded_and_in_their_regions() -> None:
    x, y = sample_annuli(400, 3, seed=5)
    again, _ = sample_annuli(400, 3, seed=5)
    assert torch.equal(x, again)
    radius = x.norm(dim=1)
    assert bool((radius[y == 0] <= 0.5 + 1e-6).all())
    assert bool(((radius[y == 1] >= 1.0 - 1e-6) & (radius[y == 1] <= 1.5 + 1e-6)).all())
    assert int(y.sum()) == 200


def test_annuli_training_seed_never_draws_the_evaluation_sets() -> None:
    from odelab.data.annuli import AnnuliDataModule

    # With seed == test_seed and n_train == n_test the training set once equalled the test set.
    data = AnnuliDataModule(n_train=64, n_val=64, n_test=64, batch_size=16, seed=7, test_seed=7)
    data.setup()
    train, test = data.splits["train"].tensors[0], data.splits["test"].tensors[0]
    assert train.shape == test.shape and not torch.equal(train, test)
    # One epoch is a permutation of the training set, in an order fixed by the seed alone:
    # that of a plain DataLoader shuffled by a generator of the seed (the committed records').
    epoch = torch.cat([batch[0] for batch in data.train_dataloader()])
    assert not torch.equal(epoch, train)
    assert torch.equal(epoch[epoch[:, 0].argsort()], train[train[:, 0].argsort()])
    plain = DataLoader(
        data.splits["train"],
        batch_size=16,
        shuffle=True,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(epoch, torch.cat([batch[0] for batch in plain]))
    assert torch.equal(torch.cat([batch[0] for batch in data.train_dataloader()]), epoch)


def test_data_controlled_cnf_runs_and_its_condition_changes_the_flow(make_cfg) -> None:
    cfg = make_cfg(
        "experiment=cnf_data_control",
        "trainer.fast_dev_run=true",
        "data.batch_size=32",
        "data.eval_batch_size=64",
        "model.n_plot_samples=32",
    )
    metrics = run(cfg)
    assert math.isfinite(metrics["test/nll"])
    field = ConditionedField(dim=2, n_conditions=2, hidden=8, depth=1)
    z, t = torch.randn(5, 2), torch.tensor(0.3)
    field.condition(torch.zeros(5))
    first = field(t, z)
    field.condition(torch.ones(5))
    assert not torch.allclose(first, field(t, z))
    field.condition(torch.ones(4))
    with pytest.raises(ConfigError, match="without a condition"):
        field(t, z)

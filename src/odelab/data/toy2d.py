"""Toy 2D densities (the FFJORD targets): seeded samplers and known densities.

Each sampler draws `n` points from its target with the given generator, so a
seed fixes the data. Four targets also have a closed-form density
(`true_log_density`), used to score learned densities on a grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from odelab.checks import check_args, integer
from odelab.errors import ConfigError

Sampler2D = Callable[[int, torch.Generator], Tensor]

# 8gaussians: centres on a circle, isotropic components.
EIGHT_RADIUS, EIGHT_STD = 4.0 / math.sqrt(2.0), 0.5 / math.sqrt(2.0)
# rings: concentric circles with Gaussian noise along the radius only, each ring
# weighted by its circumference so that points are spread evenly along them.
RING_RADII, RING_STD = (0.8, 1.6, 2.4, 3.2), 0.08
# checkerboard: the 8 "black" cells of a 4x4 board of side-2 cells on [-4, 4]^2.
BOARD_CELL = 2.0


def _randn(n: int, gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=gen)


def _rand(n: int, gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=gen)


def _polar(radius: Tensor, angle: Tensor) -> Tensor:
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def swissroll(n: int, gen: torch.Generator) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, gen))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + _randn(n, gen, 2)
    return points / 5.0


def eight_gaussians(n: int, gen: torch.Generator) -> Tensor:
    component = torch.randint(8, (n,), generator=gen)
    centres = _polar(torch.full((n,), EIGHT_RADIUS), component * (2 * math.pi / 8))
    return centres + EIGHT_STD * _randn(n, gen, 2)


def pinwheel(n: int, gen: torch.Generator) -> Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(arms, (n,), generator=gen)
    features = _randn(n, gen, 2) * torch.tensor([radial_std, tangential_std]) + torch.tensor(
        [1.0, 0.0]
    )
    angle = arm * (2 * math.pi / arms) + rate * torch.exp(features[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack(
        [cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]],
        dim=1,
    )
    return 2.0 * rotated


# circles: two circles of equal weight with isotropic Gaussian noise, then scaled.
CIRCLE_RADII, CIRCLE_STD, CIRCLE_SCALE = (1.0, 0.5), 0.08, 3.0


def circles(n: int, gen: torch.Generator) -> Tensor:
    radius = torch.where(_rand(n, gen) < 0.5, CIRCLE_RADII[0], CIRCLE_RADII[1])
    points = _polar(radius, 2 * math.pi * _rand(n, gen)) + CIRCLE_STD * _randn(n, gen, 2)
    return CIRCLE_SCALE * points


def moons(n: int, gen: torch.Generator) -> Tensor:
    upper = _rand(n, gen) < 0.5
    angle = math.pi * _rand(n, gen)
    upper_moon = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower_moon = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(upper[:, None], upper_moon, lower_moon) + 0.1 * _randn(n, gen, 2)
    return 2.0 * points + torch.tensor([-1.0, -0.25])


def two_spirals(n: int, gen: torch.Generator) -> Tensor:
    turn = torch.sqrt(_rand(n, gen)) * (540 * 2 * math.pi / 360)
    arm = torch.stack([-torch.cos(turn) * turn, torch.sin(turn) * turn], dim=1) + 0.5 * _rand(
        n, gen, 2
    )
    sign = torch.where(_rand(n, gen) < 0.5, 1.0, -1.0)[:, None]
    return sign * arm / 3.0 + 0.1 * _randn(n, gen, 2)


def checkerboard(n: int, gen: torch.Generator) -> Tensor:
    black = torch.tensor(
        [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float32
    )
    cell = black[torch.randint(len(black), (n,), generator=gen)]
    return (cell + _rand(n, gen, 2)) * BOARD_CELL - 4.0


def rings(n: int, gen: torch.Generator) -> Tensor:
    radii = torch.tensor(RING_RADII)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=gen)
    radius = radii[ring] + RING_STD * _randn(n, gen)
    return _polar(radius, 2 * math.pi * _rand(n, gen))


SAMPLERS: dict[str, Sampler2D] = {
    "swissroll": swissroll,
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "circles": circles,
    "moons": moons,
    "2spirals": two_spirals,
    "checkerboard": checkerboard,
    "rings": rings,
}


def _normal_log_pdf(x: Tensor, mean: Tensor | float, std: float) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))


def eight_gaussians_log_density(x: Tensor) -> Tensor:
    angles = torch.arange(8, dtype=x.dtype) * (2 * math.pi / 8)
    centres = _polar(torch.full((8,), EIGHT_RADIUS, dtype=x.dtype), angles)
    per_axis = _normal_log_pdf(x[:, None, :], centres[None], EIGHT_STD).sum(-1)  # (N, 8)
    return torch.logsumexp(per_axis, dim=1) - math.log(8)


def rings_log_density(x: Tensor) -> Tensor:
    # Polar change of variables: p(x) = p_r(r) / (2 pi r). A negative radius
    # draw lands at |r| on the opposite side, hence the mirrored term.
    radii = torch.tensor(RING_RADII, dtype=x.dtype)
    log_weight = torch.log(radii / radii.sum())
    r = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mirrored = torch.stack(
        [_normal_log_pdf(r, radii, RING_STD), _normal_log_pdf(-r, radii, RING_STD)]
    )
    log_p_radius = torch.logsumexp(torch.logsumexp(mirrored, dim=0) + log_weight, dim=1)
    return log_p_radius - torch.log(2 * math.pi * r[:, 0])


def circles_log_density(x: Tensor) -> Tensor:
    # A circle of radius R blurred by N(0, s^2 I) has density
    # exp(-(r^2 + R^2) / 2s^2) I0(r R / s^2) / (2 pi s^2) (the angle integrated out);
    # i0e(u) = exp(-u) I0(u) keeps it finite far out. Then the scaling x = 3 y.
    y = x / CIRCLE_SCALE
    r = y.norm(dim=1, keepdim=True)
    radii = torch.tensor(CIRCLE_RADII, dtype=x.dtype)
    var = CIRCLE_STD**2
    log_ring = (
        -((r - radii) ** 2) / (2 * var)
        + torch.log(torch.special.i0e(r * radii / var))
        - math.log(2 * math.pi * var)
    )
    log_y = torch.logsumexp(log_ring, dim=1) - math.log(len(CIRCLE_RADII))
    return log_y - 2 * math.log(CIRCLE_SCALE)


def checkerboard_log_density(x: Tensor) -> Tensor:
    cell = torch.floor((x + 4.0) / BOARD_CELL)
    inside = ((cell >= 0) & (cell <= 3)).all(dim=1)
    black = (cell.sum(dim=1) % 2 == 0) & inside
    area = 8 * BOARD_CELL**2
    return torch.where(black, -math.log(area), -math.inf).to(x.dtype)


TRUE_LOG_DENSITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "8gaussians": eight_gaussians_log_density,
    "rings": rings_log_density,
    "checkerboard": checkerboard_log_density,
    "circles": circles_log_density,
}


def sample(name: str, n: int, seed: int) -> Tensor:
    """`n` points of target `name`, the same for the same seed."""
    if name not in SAMPLERS:
        raise ConfigError(
            f"data.name={name!r} is not a toy 2D target; choose one of {sorted(SAMPLERS)}"
        )
    return SAMPLERS[name](n, torch.Generator().manual_seed(seed)).to(torch.get_default_dtype())


class FreshBatches(Dataset):
    """Item `key` is a new batch drawn with seed `key`: unlimited data, reproducible.

    Args:
        draw: `draw(n, seed)` returns n points drawn from `seed`.
        batch_size: points a batch.
    """

    def __init__(self, draw: Callable[[int, int], Tensor], batch_size: int):
        self.draw, self.batch_size = draw, batch_size

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, key: int) -> Tensor:
        return self.draw(self.batch_size, key)


class BatchSeeds(Sampler[int]):
    """`num_batches` batch seeds per epoch, derived from (seed, epoch, index).

    Lightning calls `set_epoch`, so a resumed run draws the batches an
    uninterrupted run would have drawn.
    """

    def __init__(self, num_batches: int, seed: int):
        self.num_batches, self.seed, self.epoch = num_batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[int]:
        base = (self.seed * 1_000_003 + self.epoch * 10_007) % (2**31 - 10**6)
        yield from (base + i for i in range(self.num_batches))


class FreshSamples(L.LightningDataModule):
    """Loaders of a sampled target: fresh seeded training batches (one seed a batch, the
    seeds drawn from `seed`), fixed test and validation sets drawn from `test_seed` and
    `test_seed + 1`. A subclass says how to `draw` n points from a seed."""

    seed: int
    test_seed: int
    batch_size: int
    batches_per_epoch: int
    eval_batch_size: int
    n_val: int
    n_test: int
    val_set: Tensor | None
    test_set: Tensor | None

    def draw(self, n: int, seed: int) -> Tensor:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is None:
            self.test_set = self.draw(self.n_test, self.test_seed)
            self.val_set = self.draw(self.n_val, self.test_seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            FreshBatches(self.draw, self.batch_size),
            sampler=BatchSeeds(self.batches_per_epoch, self.seed),
            batch_size=None,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.eval_batch_size)


class Toy2DDataModule(FreshSamples):
    """Fresh training batches from a toy target; fixed validation and test sets.

    Args:
        name: one of `SAMPLERS`.
        batch_size: training points per step.
        batches_per_epoch: training steps in one epoch.
        n_val: size of the validation set (drawn once from `test_seed + 1`).
        n_test: size of the test set (drawn once from `test_seed`, the same for
            every training seed so that runs compare on the same points).
        eval_batch_size: points per evaluation batch.
        seed: seeds the training batches.
        test_seed: seeds the validation and test sets.
    """

    def __init__(
        self,
        name: str = "8gaussians",
        batch_size: int = 512,
        batches_per_epoch: int = 100,
        n_val: int = 2000,
        n_test: int = 10_000,
        eval_batch_size: int = 5000,
        seed: int = 0,
        test_seed: int = 2024,
    ):
        super().__init__()
        if name not in SAMPLERS:
            raise ConfigError(
                f"data.name={name!r} is not a toy 2D target; choose one of {sorted(SAMPLERS)}"
            )
        for key, value in (
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("n_val", n_val),
            ("n_test", n_test),
            ("eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        check_args("data", {"seed": integer(0), "test_seed": integer(0)}, locals())
        self.name = name
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.n_val, self.n_test, self.eval_batch_size = n_val, n_test, eval_batch_size
        self.seed, self.test_seed = seed, test_seed
        self.val_set: Tensor | None = None
        self.test_set: Tensor | None = None

    @property
    def true_log_density(self) -> Callable[[Tensor], Tensor] | None:
        return TRUE_LOG_DENSITIES.get(self.name)

    def draw(self, n: int, seed: int) -> Tensor:
        return sample(self.name, n, seed)

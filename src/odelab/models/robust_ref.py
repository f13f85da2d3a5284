"""The robustness study's MNIST nets as its authors laid them out (Yan et al. 2020, TisODE).

odelab's own robustness nets (`odelab.models.odenet.CNN`, `ODENet` with `downsample=1`)
share a pre-activation field (norm, ReLU, conv twice, final norm) and a norm-ReLU-pool
head; the CNN applies that field once with no skip. The authors' layout differs (described
in the issue from their code, written here from that description):

* stem: 3x3 conv (1 -> 64, no padding), GroupNorm, ReLU, 4x4 stride-2 conv, GroupNorm,
  ReLU: the stem ends post-activation, so the middle sees features >= 0;
* CNN middle: one residual block, (bias-free 3x3 conv, GroupNorm, ReLU) twice, plus the
  input (`out + x`);
* ODENet middle: an ODE block over [0, 1] whose field is post-activation, (time-concat
  3x3 conv with bias, GroupNorm, ReLU) twice, so f >= 0;
* head: global average pooling and one linear layer (no norm, no ReLU).

Parameters: CNN 141,130, ODENet 142,410 (tests/test_robust_ref.py). Both keep odelab's
`normalize` / `stem` / `middle` / `head` attributes, so the robust task's feature
perturbation and attacks treat them like odelab's nets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError
from odelab.models.image_blocks import group_norm
from odelab.models.odenet import ImageNet, TimeConcatConv2d
from odelab.ode import ODEBlock, Sensitivity, Solver


def authors_stem(in_channels: int, channels: int) -> nn.Sequential:
    """3x3 conv, norm, ReLU, 4x4 stride-2 conv, norm, ReLU (28x28 -> 13x13)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, 1),
        group_norm(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 4, 2, 1),
        group_norm(channels),
        nn.ReLU(),
    )


def authors_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling and one linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class AuthorsResBlock(nn.Module):
    """(bias-free conv, norm, ReLU) twice, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h))) + x


class AuthorsODEField(nn.Module):
    """f(t, z) = ReLU(norm(conv(t, ReLU(norm(conv(t, z)))))): post-activation, f >= 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = TimeConcatConv2d(channels, channels)
        self.norm1 = group_norm(channels)
        self.conv2 = TimeConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        # Not in-place: the solvers keep references to intermediate states.
        h = torch.relu(self.norm1(self.conv1(t, z)))
        return torch.relu(self.norm2(self.conv2(t, h)))


class _AuthorsNet(ImageNet):
    """`ImageNet` with the authors' stem and pool-FC head (no downsampling choice)."""

    def __init__(
        self,
        channels: int,
        in_channels: int,
        num_classes: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ) -> None:
        # downsample: the authors' stem has one fixed layout; make_stem ignores it.
        super().__init__(channels, in_channels, num_classes, 0, mean, std)

    def make_stem(self, in_channels: int, channels: int, downsample: int) -> nn.Module:
        return authors_stem(in_channels, channels)

    def make_head(self, channels: int, num_classes: int) -> nn.Module:
        return authors_head(channels, num_classes)


class AuthorsCNN(_AuthorsNet):
    """The authors' CNN: stem, one residual block, pool-FC head (141,130 parameters at 64).

    Args:
        channels: feature maps.
        in_channels: image channels.
        num_classes: logits.
        mean: pixel mean used to normalise the [0, 1] input (one, or one per channel).
        std: pixel std.
    """

    def __init__(
        self,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        mean: float | Sequence[float] = 0.1307,
        std: float | Sequence[float] = 0.3081,
    ) -> None:
        super().__init__(channels, in_channels, num_classes, mean, std)
        self.middle = AuthorsResBlock(channels)


class AuthorsODENet(_AuthorsNet):
    """The authors' ODENet: stem, ODE block of the post-activation field, pool-FC head
    (142,410 parameters at 64).

    Args:
        solver: how the block integrates (the study: Euler, step 0.1).
        sensitivity: adjoint or direct back-propagation through the solve.
        channels, in_channels, num_classes, mean, std: as in `AuthorsCNN`.
        t_end: integration horizon.
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        t_end: float = 1.0,
        mean: float | Sequence[float] = 0.1307,
        std: float | Sequence[float] = 0.3081,
    ) -> None:
        super().__init__(channels, in_channels, num_classes, mean, std)
        if t_end <= 0:
            raise ConfigError(f"model.net.t_end must be > 0, got {t_end}")
        self.middle = ODEBlock(
            AuthorsODEField(channels), solver, sensitivity, t=(0.0, t_end), name="model.net.block"
        )

    @property
    def block(self) -> ODEBlock:
        return self.middle

    @property
    def field(self) -> nn.Module:
        return self.block.field

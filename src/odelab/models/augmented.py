"""The augmentations of "Dissecting Neural ODEs" carried over to image ODE-Nets.

`AugmentedODENet` is the convolutional ODE-Net with zero, input-layer or higher-order
augmentation; `ConditionedField` conditions a field on labels. Split from
`models.dissecting` (which re-exports them and the `AUGMENTATIONS` names) to keep each
module short; the names live here so that `dissecting` imports this module and not the
other way round.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from odelab.errors import ConfigError, check_sizes
from odelab.models.fields import ACTIVATIONS
from odelab.models.image_blocks import Normalize, downsampling_stem
from odelab.models.odenet import ConvODEField, TimeConcatConv2d
from odelab.ode import ODEBlock, Sensitivity, Solver

AUGMENTATIONS = ("none", "zero", "input_layer", "higher_order")


class AugmentedConvField(nn.Module):
    """ConvODEField's layout on `channels` maps with `out_channels` outputs.

    Group norms use gcd(32, channels) groups so any augmented width works.
    """

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_in = _norm(channels)
        self.conv1 = TimeConcatConv2d(channels, out_channels)
        self.norm_mid = _norm(out_channels)
        self.conv2 = TimeConcatConv2d(out_channels, out_channels)
        self.norm_out = _norm(out_channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        h = self.conv1(t, torch.relu(self.norm_in(z)))
        h = self.conv2(t, torch.relu(self.norm_mid(h)))
        return self.norm_out(h)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class AugmentedODENet(nn.Module):
    """ODE-Net (stem, one ODE block, pooling head) with one augmentation of the block's state.

    Args:
        solver: how the block integrates.
        sensitivity: adjoint or direct back-propagation.
        augment: "zero" (append `augment_channels` zero maps), "input_layer" (a 1x1
            conv lifts the stem's maps to channels + augment_channels) or
            "higher_order" (position and velocity maps, velocity starting at 0).
        channels: maps out of the stem.
        augment_channels: extra maps for zero and input-layer augmentation.
        in_channels: image channels.
        num_classes: logits.
        t_end: integration horizon.
        mean: pixel mean used to normalise the [0, 1] input.
        std: pixel std used to normalise the [0, 1] input.
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        augment: str = "zero",
        channels: int = 32,
        augment_channels: int = 8,
        in_channels: int = 1,
        num_classes: int = 10,
        t_end: float = 1.0,
        mean: float = 0.1307,
        std: float = 0.3081,
    ):
        super().__init__()
        check_sizes(channels=channels, in_channels=in_channels, num_classes=num_classes)
        if augment not in AUGMENTATIONS[1:]:
            raise ConfigError(
                f"model.net.augment={augment!r}; choose one of {list(AUGMENTATIONS[1:])} "
                "(model/net=odenet is the unaugmented ODE-Net)"
            )
        if augment != "higher_order" and augment_channels < 1:
            raise ConfigError(f"model.net.augment={augment} needs model.net.augment_channels >= 1")
        if t_end <= 0:
            raise ConfigError(f"model.net.t_end must be > 0, got {t_end}")
        self.augment, self.channels = augment, channels
        self.normalize = Normalize(mean, std)
        self.stem = downsampling_stem(in_channels, channels)
        if augment == "higher_order":
            state = 2 * channels
            field: nn.Module = _ConvSecondOrder(AugmentedConvField(state, channels), channels)
        else:
            state = channels + augment_channels
            field = (
                ConvODEField(state)
                if state % min(32, state) == 0
                else AugmentedConvField(state, state)
            )
        self.state_channels = state
        self.lift = nn.Conv2d(channels, state, 1) if augment == "input_layer" else None
        self.block = ODEBlock(field, solver, sensitivity, t=(0.0, t_end), name="model.net.block")
        self.head = nn.Sequential(
            _norm(state),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(state, num_classes),
        )

    @property
    def field(self) -> nn.Module:
        return self.block.field

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(self.normalize(x))
        if self.lift is not None:
            h = self.lift(h)
        else:
            pad = self.state_channels - self.channels
            h = torch.cat([h, h.new_zeros(h.shape[0], pad, *h.shape[2:])], dim=1)
        return self.head(self.block(h))


class _ConvSecondOrder(nn.Module):
    """dq/dt = p, dp/dt = a(t, [q, p]) on feature maps stacked along the channels."""

    def __init__(self, accel: nn.Module, channels: int):
        super().__init__()
        self.accel, self.channels = accel, channels

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.cat([z[:, self.channels :], self.accel(t, z)], dim=1)


class ConditionedField(nn.Module):
    """The data-controlled CNF field f(t, z, c): an MLP on [z, one-hot c, t].

    The condition of the current solve is set with `condition(labels)` before it; it
    is a constant of the solve (no gradient flows into labels), so both the direct
    and the adjoint method treat it like any other input the field closes over.

    Args:
        dim: state dimension.
        n_conditions: number of condition labels.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        activation: one of `odelab.models.fields.ACTIVATIONS`.
    """

    def __init__(
        self,
        dim: int = 2,
        n_conditions: int = 2,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "tanh",
    ):
        super().__init__()
        check_sizes(
            "model.flow.field", dim=dim, n_conditions=n_conditions, hidden=hidden, depth=depth
        )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.flow.field.activation={activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        widths = [dim + n_conditions + 1] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in pairwise(widths):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))
        self.n_conditions = n_conditions
        self._onehot: Tensor | None = None

    def condition(self, labels: Tensor) -> None:
        self._onehot = F.one_hot(labels.long(), self.n_conditions).float()

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        if self._onehot is None or self._onehot.shape[0] != z.shape[0]:
            raise ConfigError(
                "the data-controlled CNF field was solved without a condition for this batch; "
                "call field.condition(labels) first (model.flow.field)"
            )
        onehot = self._onehot.to(z)
        return self.net(torch.cat([z, onehot, t.to(z).expand(z.shape[0], 1)], dim=1))

"""ODE-Net (Chen et al. 2018, Table 1) and its field, shared with RK-Net.

ODE-Net and RK-Net are the same network: a downsampling stem, one ODE block on
64 channels and a pooling head. They differ only in how the block is solved and
differentiated (adaptive dopri5 with the adjoint vs fixed-grid rk4 with direct
back-propagation), which comes from the `solver` and `sensitivity` configs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError
from odelab.models.image_blocks import (
    Normalize,
    check_sizes,
    downsampling_stem,
    group_norm,
    pooling_head,
)
from odelab.ode import ODEBlock, Sensitivity, Solver


class TimeConcatConv2d(nn.Conv2d):
    """A convolution that also sees the time: t enters as one extra constant channel."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, padding: int = 1):
        super().__init__(channels_in + 1, channels_out, kernel_size, padding=padding)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        time_channel = torch.ones_like(x[:, :1]) * t
        return super().forward(torch.cat([time_channel, x], dim=1))


class ConvODEField(nn.Module):
    """f(t, z) on feature maps: (norm, ReLU, time-concat conv) twice, then a final norm."""

    def __init__(self, channels: int = 64):
        super().__init__()
        check_sizes(channels=channels)
        self.norm_in = group_norm(channels)
        self.conv1 = TimeConcatConv2d(channels, channels)
        self.norm_mid = group_norm(channels)
        self.conv2 = TimeConcatConv2d(channels, channels)
        self.norm_out = group_norm(channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        # Not in-place: the solvers keep references to intermediate states.
        h = self.conv1(t, torch.relu(self.norm_in(z)))
        h = self.conv2(t, torch.relu(self.norm_mid(h)))
        return self.norm_out(h)


class ODENet(nn.Module):
    """Stem, one ODE block integrated over [0, t_end], pooling head.

    Args:
        solver: how the block integrates (dopri5 for ODE-Net, rk4 for RK-Net).
        sensitivity: adjoint or direct back-propagation through the solve.
        channels: feature maps in the block.
        in_channels: image channels.
        num_classes: logits.
        t_end: integration horizon; longer horizons cost more evaluations.
        mean: pixel mean used to normalise the [0, 1] input.
        std: pixel std used to normalise the [0, 1] input.
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        t_end: float = 1.0,
        mean: float = 0.1307,
        std: float = 0.3081,
    ):
        super().__init__()
        check_sizes(channels=channels, in_channels=in_channels, num_classes=num_classes)
        if t_end <= 0:
            raise ConfigError(f"model.net.t_end must be > 0, got {t_end}")
        self.normalize = Normalize(mean, std)
        self.stem = downsampling_stem(in_channels, channels)
        self.block = ODEBlock(
            ConvODEField(channels), solver, sensitivity, t=(0.0, t_end), name="model.net.block"
        )
        self.head = pooling_head(channels, num_classes)

    @property
    def field(self) -> nn.Module:
        return self.block.field

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.stem(self.normalize(x))))

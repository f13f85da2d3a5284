"""The ODE-Net family: Table 1's ODE-Net and RK-Net (Chen et al. 2018) and the robustness
study's ODENet, TisODE and CNN (Yan et al. 2020).

All are one network: a downsampling stem, a middle on feature maps and a pooling head.
ODE-Net and RK-Net differ only in how the block is solved and differentiated (adaptive
dopri5 with the adjoint vs fixed-grid rk4 with direct back-propagation), which comes from
the `solver` and `sensitivity` configs. The robustness study's nets use one strided conv
in the stem (`downsample=1`); TisODE makes the field time-invariant and adds a
steady-state penalty; the CNN applies the field's two convolutions once instead of
integrating them.
"""

from __future__ import annotations

from collections.abc import Sequence

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


class TimeFreeConv2d(nn.Conv2d):
    """The same convolution without the time channel (time-invariant fields)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, padding: int = 1):
        super().__init__(channels_in, channels_out, kernel_size, padding=padding)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x)


class ConvODEField(nn.Module):
    """f(t, z) on feature maps: (norm, ReLU, conv) twice, then a final norm.

    Args:
        channels: feature maps of the state.
        time_dependent: the convolutions see t as an extra channel; False gives the
            autonomous field f(z) of TisODE (and the CNN's middle).
    """

    def __init__(self, channels: int = 64, time_dependent: bool = True):
        super().__init__()
        check_sizes(channels=channels)
        conv = TimeConcatConv2d if time_dependent else TimeFreeConv2d
        self.norm_in = group_norm(channels)
        self.conv1 = conv(channels, channels)
        self.norm_mid = group_norm(channels)
        self.conv2 = conv(channels, channels)
        self.norm_out = group_norm(channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        # Not in-place: the solvers keep references to intermediate states.
        h = self.conv1(t, torch.relu(self.norm_in(z)))
        h = self.conv2(t, torch.relu(self.norm_mid(h)))
        return self.norm_out(h)


class ImageNet(nn.Module):
    """Normalise -> stem -> middle -> pooling head. Subclasses set `middle`.

    `regularization()` is the extra training loss of the last forward pass (None here;
    TisODE's steady-state penalty).
    """

    def __init__(
        self,
        channels: int,
        in_channels: int,
        num_classes: int,
        downsample: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ):
        super().__init__()
        check_sizes(channels=channels, in_channels=in_channels, num_classes=num_classes)
        self.normalize = Normalize(mean, std, in_channels)
        self.stem = self.make_stem(in_channels, channels, downsample)
        self.middle: nn.Module = nn.Identity()
        self.head = self.make_head(channels, num_classes)

    def make_stem(self, in_channels: int, channels: int, downsample: int) -> nn.Module:
        """Images to feature maps; a subclass with another layout overrides it."""
        return downsampling_stem(in_channels, channels, downsample)

    def make_head(self, channels: int, num_classes: int) -> nn.Module:
        """Feature maps to logits."""
        return pooling_head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.middle(self.stem(self.normalize(x))))

    def regularization(self) -> Tensor | None:
        return None


class ODENet(ImageNet):
    """Stem, one ODE block integrated over [0, t_end], pooling head.

    Args:
        solver: how the block integrates (dopri5 for ODE-Net, rk4 for RK-Net, Euler in the
            robustness study).
        sensitivity: adjoint or direct back-propagation through the solve.
        channels: feature maps in the block.
        in_channels: image channels.
        num_classes: logits.
        t_end: integration horizon; longer horizons cost more evaluations.
        time_dependent: the field sees t (False: autonomous, as in TisODE).
        downsample: strided convolutions in the stem (2: Table 1, 1: robustness study).
        mean: pixel mean (one, or one per channel) used to normalise the [0, 1] input.
        std: pixel std (one, or one per channel).
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        t_end: float = 1.0,
        time_dependent: bool = True,
        downsample: int = 2,
        mean: float | Sequence[float] = 0.1307,
        std: float | Sequence[float] = 0.3081,
    ):
        super().__init__(channels, in_channels, num_classes, downsample, mean, std)
        if t_end <= 0:
            raise ConfigError(f"model.net.t_end must be > 0, got {t_end}")
        self.middle = ODEBlock(
            ConvODEField(channels, time_dependent),
            solver,
            sensitivity,
            t=(0.0, t_end),
            name="model.net.block",
        )

    @property
    def block(self) -> ODEBlock:
        return self.middle

    @property
    def field(self) -> nn.Module:
        return self.block.field


class TisODE(ODENet):
    """Time-invariant ODENet with the steady-state penalty mean |f(z(T))|.

    The penalty pushes z(T) towards an equilibrium of the flow, so a perturbed feature
    map that starts nearby ends nearby (Yan et al. 2020, TisODE). Arguments as in
    `ODENet`, with the study's horizon T = 2 and one-stride stem as defaults; the
    field never sees t.
    """

    def __init__(self, solver: Solver, sensitivity: Sensitivity, **options: object):
        options = {"t_end": 2.0, "downsample": 1, **options, "time_dependent": False}
        super().__init__(solver, sensitivity, **options)  # type: ignore[arg-type]
        self._steady: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        z_end = self.middle(self.stem(self.normalize(x)))
        # The field at T, evaluated outside the block so NFE counts stay those of the solve.
        self._steady = self.field(self.block.t[-1], z_end).abs().mean()
        return self.head(z_end)

    def regularization(self) -> Tensor | None:
        return self._steady


class CNN(ImageNet):
    """The ODENet with its ODE block replaced by its field's two convolutions applied once."""

    def __init__(
        self,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        downsample: int = 1,
        mean: float | Sequence[float] = 0.1307,
        std: float | Sequence[float] = 0.3081,
    ):
        super().__init__(channels, in_channels, num_classes, downsample, mean, std)
        self.middle = _AppliedOnce(ConvODEField(channels, time_dependent=False))


class _AppliedOnce(nn.Module):
    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field

    def forward(self, z: Tensor) -> Tensor:
        return self.field(torch.zeros((), device=z.device, dtype=z.dtype), z)

"""The networks of the ODE-Net robustness study (Yan et al. 2020): CNN, ODENet, TisODE.

All three share a convolutional feature extractor and a linear head and differ only in
the middle: two convolutions (CNN), an ODE block whose field is those two convolutions
(ODENet), or a time-invariant field integrated over a longer horizon (TisODE). Each net
normalises its own input, so attacks and noise act on pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Sensitivity, Solver


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm works per sample: an attacked example cannot influence another one's output.
    return nn.GroupNorm(min(32, channels), channels)


class Normalize(nn.Module):
    """Standardises pixels in [0, 1] with fixed per-channel statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def feature_extractor(in_channels: int, width: int) -> nn.Sequential:
    """Conv 3x3 then a stride-2 conv 4x4: 28x28 -> 13x13 (32x32 -> 15x15)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1),
        _norm(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 4, 2, 1),
        _norm(width),
        nn.ReLU(),
    )


def classifier_head(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        _norm(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


class ConvField(nn.Module):
    """f(t, z) = conv(relu(norm(conv(relu(norm(z)))))) on feature maps.

    Args:
        width: channels of the state.
        time_dependent: append t as a constant input channel to both convolutions
            (ODENet); False gives the time-invariant field f(z) of TisODE.
    """

    def __init__(self, width: int, time_dependent: bool = True):
        super().__init__()
        extra = 1 if time_dependent else 0
        self.time_dependent = time_dependent
        self.norm1, self.norm2, self.norm3 = _norm(width), _norm(width), _norm(width)
        self.conv1 = nn.Conv2d(width + extra, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width + extra, width, 3, 1, 1)

    def _with_time(self, t: Tensor, z: Tensor) -> Tensor:
        if not self.time_dependent:
            return z
        return torch.cat([z, t.to(z).expand(z.shape[0], 1, *z.shape[2:])], dim=1)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        h = self.conv1(self._with_time(t, torch.relu(self.norm1(z))))
        h = self.conv2(self._with_time(t, torch.relu(self.norm2(h))))
        return self.norm3(h)


class RobustNet(nn.Module):
    """Normalise -> feature extractor -> middle -> linear head.

    Subclasses set `middle`. `regularization()` returns the extra training loss term
    computed in the last forward pass (zero for the CNN and ODENet).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ConfigError(
                f"model.net.mean/std need {in_channels} entries (one per input channel)"
            )
        if width < 1 or num_classes < 2:
            raise ConfigError("model.net.width must be >= 1 and model.net.num_classes >= 2")
        self.normalize = Normalize(mean, std)
        self.features = feature_extractor(in_channels, width)
        self.head = classifier_head(width, num_classes)
        self.middle: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.middle(self.features(self.normalize(x))))

    def regularization(self) -> Tensor | None:
        return None


class CNN(RobustNet):
    """The ODENet with its ODE block replaced by the field's two convolutions applied once."""

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        num_classes: int = 10,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ):
        super().__init__(in_channels, width, num_classes, mean, std)
        self.middle = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1),
            _norm(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
        )


class ODENet(RobustNet):
    """Feature maps flow along dz/dt = f(t, z) from 0 to `horizon` before the head.

    Args:
        solver, sensitivity: how the block integrates (the study uses Euler, step 0.1).
        horizon: end time T of the integration.
        time_dependent: False makes the field autonomous (TisODE).
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        in_channels: int = 1,
        width: int = 64,
        num_classes: int = 10,
        horizon: float = 1.0,
        time_dependent: bool = True,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ):
        super().__init__(in_channels, width, num_classes, mean, std)
        if horizon <= 0:
            raise ConfigError(f"model.net.horizon must be > 0, got {horizon}")
        self.middle = ODEBlock(
            ConvField(width, time_dependent),
            solver,
            sensitivity,
            t=(0.0, horizon),
            name="model.net.field",
        )

    @property
    def block(self) -> ODEBlock:
        return self.middle


class TisODE(ODENet):
    """Time-invariant ODENet with the steady-state penalty mean |f(z(T))|.

    The penalty pushes z(T) towards an equilibrium of the flow, so a perturbed feature
    map that starts nearby ends nearby (Yan et al. 2020, TisODE).
    """

    def __init__(
        self,
        solver: Solver,
        sensitivity: Sensitivity,
        in_channels: int = 1,
        width: int = 64,
        num_classes: int = 10,
        horizon: float = 2.0,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
    ):
        super().__init__(
            solver, sensitivity, in_channels, width, num_classes, horizon, False, mean, std
        )
        self._steady: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        z_end = self.middle(self.features(self.normalize(x)))
        # The field at T, evaluated outside the block so NFE counts stay those of the solve.
        self._steady = self.block.field(self.block.t[-1], z_end).abs().mean()
        return self.head(z_end)

    def regularization(self) -> Tensor | None:
        return self._steady

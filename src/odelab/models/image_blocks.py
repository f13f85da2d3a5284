"""Building blocks of the image classifiers (Table 1's ODE-Net, RK-Net, ResNet and MLP; the
robustness study's CNN, ODENet and TisODE)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError, check_sizes

__all__ = ["Normalize", "check_sizes", "downsampling_stem", "group_norm", "pooling_head"]


class Normalize(nn.Module):
    """Standardises pixels with fixed statistics, so models take raw [0, 1] images.

    Keeping this inside the net lets attacks and noise act on pixel space. `mean` and
    `std` are one number for all channels or one per channel; they are saved in
    checkpoints with the weights.
    """

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        in_channels: int | None = None,
    ):
        super().__init__()
        mean_t, std_t = _per_channel(mean), _per_channel(std)
        if bool((std_t <= 0).any()):
            raise ConfigError(f"model.net.std must be > 0, got {std}")
        for key, value in (("mean", mean_t), ("std", std_t)):
            if in_channels is not None and value.numel() not in (1, in_channels):
                raise ConfigError(
                    f"model.net.{key} has {value.numel()} entries; give one or {in_channels} "
                    "(one per input channel)"
                )
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _per_channel(value: float | Sequence[float]) -> Tensor:
    values = [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]
    return torch.tensor(values).view(1, -1, 1, 1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups, as in the reference ODE-Net."""
    return nn.GroupNorm(min(32, channels), channels)


def downsampling_stem(in_channels: int, channels: int, downsample: int = 2) -> nn.Sequential:
    """One 3x3 conv, then `downsample` times (norm, ReLU, strided 4x4 conv).

    28x28 images give 6x6 feature maps with two (Table 1's ODE-Net) and 13x13 with one
    (the robustness study's nets).
    """
    if downsample < 1:
        raise ConfigError(f"model.net.downsample must be >= 1, got {downsample}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1)]
    for _ in range(downsample):
        layers += [
            group_norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 4, 2, 1),
        ]
    return nn.Sequential(*layers)


def pooling_head(channels: int, num_classes: int) -> nn.Sequential:
    """Norm, ReLU, global average pooling and one linear layer to the logits."""
    return nn.Sequential(
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )

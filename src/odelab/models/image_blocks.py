"""Building blocks shared by the MNIST-style classifiers (ODE-Net, RK-Net, ResNet, MLP)."""

from __future__ import annotations

from torch import Tensor, nn

from odelab.errors import ConfigError


class Normalize(nn.Module):
    """Standardises pixels with fixed statistics, so models take raw [0, 1] images.

    Keeping this inside the net lets attacks and noise act on pixel space.
    """

    def __init__(self, mean: float, std: float):
        super().__init__()
        if std <= 0:
            raise ConfigError(f"model.net.std must be > 0, got {std}")
        self.register_buffer("mean", _scalar(mean))
        self.register_buffer("std", _scalar(std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _scalar(value: float) -> Tensor:
    import torch

    return torch.tensor(float(value)).view(1, 1, 1, 1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups, as in the reference ODE-Net."""
    return nn.GroupNorm(min(32, channels), channels)


def downsampling_stem(in_channels: int, channels: int) -> nn.Sequential:
    """28x28 images to `channels` feature maps of 6x6: one 3x3 conv, two strided 4x4 convs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, 1),
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def pooling_head(channels: int, num_classes: int) -> nn.Sequential:
    """Norm, ReLU, global average pooling and one linear layer to the logits."""
    return nn.Sequential(
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def check_sizes(**sizes: int) -> None:
    """Raise a ConfigError naming the first size key that is not positive."""
    for key, value in sizes.items():
        if value < 1:
            raise ConfigError(f"model.net.{key} must be >= 1, got {value}")

"""The ResNet baseline of Chen et al. 2018, Table 1: ODE-Net's stem and head, six residual
blocks."""

from __future__ import annotations

from torch import Tensor, nn

from odelab.models.image_blocks import (
    Normalize,
    check_sizes,
    downsampling_stem,
    group_norm,
    pooling_head,
)


class PreActResidualBlock(nn.Module):
    """z + (norm, ReLU, conv3x3) twice: the discrete counterpart of the ODE-Net field."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(
            group_norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            group_norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        return z + self.branch(z)


class ResNet(nn.Module):
    """Stem, `num_blocks` residual blocks, pooling head.

    Args:
        num_blocks: residual blocks between stem and head (6 in the paper).
        channels: feature maps.
        in_channels, num_classes, mean, std: as in `odelab.models.odenet.ODENet`.
    """

    def __init__(
        self,
        num_blocks: int = 6,
        channels: int = 64,
        in_channels: int = 1,
        num_classes: int = 10,
        mean: float = 0.1307,
        std: float = 0.3081,
    ):
        super().__init__()
        check_sizes(
            num_blocks=num_blocks,
            channels=channels,
            in_channels=in_channels,
            num_classes=num_classes,
        )
        self.normalize = Normalize(mean, std)
        self.stem = downsampling_stem(in_channels, channels)
        self.blocks = nn.Sequential(*(PreActResidualBlock(channels) for _ in range(num_blocks)))
        self.head = pooling_head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(self.normalize(x))))

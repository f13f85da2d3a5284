"""The 1-hidden-layer MLP baseline of Chen et al. 2018, Table 1 (LeCun et al. 1998)."""

from __future__ import annotations

from torch import Tensor, nn

from odelab.models.image_blocks import Normalize, check_sizes


class MLPClassifier(nn.Module):
    """Flattened pixels, one ReLU hidden layer, logits.

    Args:
        hidden: hidden units (300 gives the paper's 0.24 M parameters on 28x28 inputs).
        image_size: side of the square input images.
        in_channels, num_classes, mean, std: as in `odelab.models.odenet.ODENet`.
    """

    def __init__(
        self,
        hidden: int = 300,
        image_size: int = 28,
        in_channels: int = 1,
        num_classes: int = 10,
        mean: float = 0.1307,
        std: float = 0.3081,
    ):
        super().__init__()
        check_sizes(
            hidden=hidden, image_size=image_size, in_channels=in_channels, num_classes=num_classes
        )
        self.normalize = Normalize(mean, std)
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.normalize(x))

"""Vector fields f(t, z) for low-dimensional states."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from odelab.checks import check_args, positive
from odelab.errors import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}
TRANSFORMS = {"identity": lambda z: z, "cube": lambda z: z**3}


class MLPField(nn.Module):
    """An autonomous MLP field, optionally applied to a fixed transform of the state.

    Args:
        dim: state dimension.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        activation: one of `ACTIVATIONS`.
        input_transform: "identity", or "cube" to feed z**3 (the prior of the
            torchdiffeq spiral demo, whose true field is cubic).
        init_std: std of the normal weight init (biases start at zero); None keeps
            PyTorch's default init.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 50,
        depth: int = 1,
        activation: str = "tanh",
        input_transform: str = "identity",
        init_std: float | None = 0.1,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.field.activation={activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        if input_transform not in TRANSFORMS:
            raise ConfigError(
                f"model.field.input_transform={input_transform!r}; choose one of "
                f"{sorted(TRANSFORMS)}"
            )
        if dim < 1 or hidden < 1 or depth < 1:
            raise ConfigError("model.field.dim, hidden and depth must be >= 1")
        widths = [dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.transform = TRANSFORMS[input_transform]
        check_args("model.field", {"init_std": positive(nullable=True)}, locals())
        if init_std is not None:
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=init_std)
                    nn.init.zeros_(m.bias)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(self.transform(z))

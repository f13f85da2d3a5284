"""What every attack shares: the call signature, the valid-pixel projection, sweeps."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError


class Attack:
    """Perturbs a batch of images in [0, 1]; subclasses implement `perturb`.

    The call always runs with gradients enabled and outside inference mode, so an
    attack works inside Lightning's test loop, and returns a detached tensor.
    """

    kind = "attack"

    def __init__(self, strength: float):
        if strength < 0:
            raise ConfigError(f"attack strength must be >= 0, got {strength} (attack.strengths)")
        self.strength = float(strength)

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.strength:g}"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            # Tensors made under inference mode cannot enter autograd; clones made here can.
            return self.perturb(model, x.clone(), y.clone()).detach()

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self) -> torch.Generator | None:
        """The attack's private random stream, created on first use (None: none)."""
        return None

    def scaled(self, factor: float) -> Attack:
        """This attack at `factor` times its strength (a training recipe's warm-up); the
        copy shares this attack's random stream, so successive copies draw fresh noise."""
        if factor < 0:
            raise ConfigError(f"an attack's strength factor must be >= 0, got {factor}")
        self.generator()  # created before copying, so the copy continues the stream
        twin = copy.copy(self)
        twin.strength = self.strength * factor
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def clip_to_ball(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L-inf ball of radius `eps` around `x`, then onto [0, 1]."""
    x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    return x_adv.clamp(0.0, 1.0)

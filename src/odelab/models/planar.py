"""A planar normalizing flow (Rezende & Mohamed 2015), the seed paper's baseline.

Each layer maps y = x + u h(w . x + b) with h = tanh; u is reparametrised so
that w . u >= -1, which keeps every layer invertible. The layers run from data
to the standard normal base (density evaluation is exact and cheap); sampling
inverts them one at a time by bisection along w.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from odelab.checks import check_args, positive
from odelab.errors import ConfigError
from odelab.models.cnf import FlowOutput, standard_normal_log_prob

BISECTION_STEPS = 60


class PlanarFlow(nn.Module):
    """K planar layers between data and a standard normal base.

    Args:
        dim: data dimension.
        layers: K, the number of planar layers.
        init_std: std of the normal init of w, u and b; keep it near 1, since a
            small w makes the invertibility shift of u (which divides by |w|^2) large.
    """

    supported_regularizers: tuple[str, ...] = ()

    def __init__(self, dim: int = 2, layers: int = 32, init_std: float = 1.0):
        super().__init__()
        if dim < 1 or layers < 1:
            raise ConfigError(
                f"model.flow.dim and model.flow.layers must be >= 1, got {dim}, {layers}"
            )
        check_args("model.flow", {"init_std": positive()}, {"init_std": init_std})
        self.w = nn.Parameter(init_std * torch.randn(layers, dim))
        self.u = nn.Parameter(init_std * torch.randn(layers, dim))
        self.b = nn.Parameter(init_std * torch.randn(layers))

    @property
    def num_layers(self) -> int:
        return self.w.shape[0]

    def _u_hat(self) -> Tensor:
        """u of every layer, shifted along w so that w . u_hat = -1 + softplus(w . u) > -1."""
        wu = (self.w * self.u).sum(dim=1, keepdim=True)
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / self.w.pow(2).sum(
            dim=1, keepdim=True
        ).clamp_min(1e-12)

    def log_prob(
        self, x: Tensor, estimator: str | None = None, regularizers: tuple[str, ...] = ()
    ) -> FlowOutput:
        """Density evaluation, data -> base; `estimator` is ignored (the log-det is exact)."""
        if regularizers:
            raise ConfigError(
                "the planar flow has no regularizers; set model.kinetic_weight and "
                "model.jacobian_weight to 0"
            )
        u_hat = self._u_hat()
        w_dot_u = (self.w * u_hat).sum(dim=1)
        z, log_det = x, x.new_zeros(x.shape[0])
        for k in range(self.num_layers):
            h = torch.tanh(z @ self.w[k] + self.b[k])
            log_det = log_det + torch.log((1 + (1 - h.pow(2)) * w_dot_u[k]).abs() + 1e-12)
            z = z + h[:, None] * u_hat[k]
        return FlowOutput(log_prob=standard_normal_log_prob(z) + log_det, base=z)

    def to_base(self, x: Tensor) -> Tensor:
        return self.log_prob(x).base

    def _invert_layer(self, k: int, y: Tensor) -> Tensor:
        # With a = w . x: w . y = a + (w . u_hat) tanh(a + b), increasing in a,
        # and |a - w . y| <= |w . u_hat|, which brackets the root.
        u_hat = self._u_hat()[k]
        wu, target = self.w[k] @ u_hat, y @ self.w[k]
        lo, hi = target - wu.abs() - 1e-6, target + wu.abs() + 1e-6
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            above = mid + wu * torch.tanh(mid + self.b[k]) > target
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        a = 0.5 * (lo + hi)
        return y - torch.tanh(a + self.b[k])[:, None] * u_hat

    def trajectory(self, z: Tensor, n_frames: int) -> Tensor:
        """Base (frame 0) -> data (last frame), frames spread evenly over the layers."""
        keep = {round(i * self.num_layers / (n_frames - 1)) for i in range(n_frames)}
        frames, x = [z] if 0 in keep else [], z
        for done, k in enumerate(reversed(range(self.num_layers)), start=1):
            x = self._invert_layer(k, x)
            if done in keep:
                frames.append(x)
        return torch.stack(frames)

    def sample(self, z: Tensor) -> Tensor:
        """Base -> data by inverting the layers."""
        for k in reversed(range(self.num_layers)):
            z = self._invert_layer(k, z)
        return z

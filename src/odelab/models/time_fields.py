"""Time-dependent vector fields f(t, z) for continuous normalizing flows."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError, check_sizes
from odelab.models.fields import ACTIVATIONS


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"model.flow.field.activation={name!r}; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


class ConcatLinear(nn.Module):
    """A linear layer that sees the time as one more input: W [h, t] + b."""

    def __init__(self, w_in: int, w_out: int):
        super().__init__()
        self.layer = nn.Linear(w_in + 1, w_out)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.layer(torch.cat([h, t.to(h).expand(h.shape[0], 1)], dim=1))


class ConcatSquashLinear(nn.Module):
    """A linear layer modulated by time: (W h + b) * sigmoid(a(t)) + c(t).

    The gate a(t) and the shift c(t) are affine in t (the shift without its own
    bias, which `W h + b` already has), so every unit can scale and move with time.
    """

    def __init__(self, w_in: int, w_out: int):
        super().__init__()
        self.layer = nn.Linear(w_in, w_out)
        self.gate = nn.Linear(1, w_out)
        self.shift = nn.Linear(1, w_out, bias=False)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        time = t.to(h).reshape(1, 1)
        return self.layer(h) * torch.sigmoid(self.gate(time)) + self.shift(time)


class TimeLayerField(nn.Module):
    """A stack of time-aware layers (`layer_type(w_in, w_out)`, called as layer(t, h))
    with an activation between them: dim -> hidden x depth -> dim.

    Args:
        dim: state dimension.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        activation: one of `odelab.models.fields.ACTIVATIONS`.
    """

    layer_type: type[nn.Module] = ConcatLinear

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 3, activation: str = "tanh"):
        super().__init__()
        check_sizes("model.flow.field", dim=dim, hidden=hidden, depth=depth)
        widths = [dim] + [hidden] * depth + [dim]
        self.layers = nn.ModuleList(self.layer_type(a, b) for a, b in pairwise(widths))
        self.act = _activation(activation)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class ConcatMLPField(TimeLayerField):
    """An MLP that sees the time at every layer: each layer acts on [h, t]."""

    layer_type = ConcatLinear


class ConcatSquashField(TimeLayerField):
    """FFJORD's toy field: `ConcatSquashLinear` layers (64-64-64 tanh there)."""

    layer_type = ConcatSquashLinear


class HyperField(nn.Module):
    """The seed paper's CNF field with M units whose weights are functions of time.

    f(t, z) = sum_m u_m(t) tanh(w_m(t) . z + b_m(t)) * g_m(t), where a small
    hyper-network maps t to (u, w, b, g); with M = 1 this is a continuous
    planar flow.

    Args:
        dim: state dimension.
        units: M, the number of tanh units.
        hyper_hidden: width of the hyper-network.
    """

    def __init__(self, dim: int = 2, units: int = 32, hyper_hidden: int = 32):
        super().__init__()
        check_sizes("model.flow.field", dim=dim, units=units, hyper_hidden=hyper_hidden)
        self.dim, self.units = dim, units
        self.hyper = nn.Sequential(
            nn.Linear(1, hyper_hidden),
            nn.Tanh(),
            nn.Linear(hyper_hidden, hyper_hidden),
            nn.Tanh(),
            nn.Linear(hyper_hidden, units * (2 * dim + 2)),
        )

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        params = self.hyper(t.to(z).reshape(1, 1)).reshape(self.units, 2 * self.dim + 2)
        w, u = params[:, : self.dim], params[:, self.dim : 2 * self.dim]
        b, gate = params[:, -2], torch.sigmoid(params[:, -1])
        return torch.tanh(z @ w.T + b) @ (u * gate[:, None])

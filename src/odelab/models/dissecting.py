"""The model family of "Dissecting Neural ODEs" (Massaroli et al. 2020).

One classifier, `DissectedNODE`, whose options switch on each design choice of
the paper, so every variant is the vanilla Neural ODE plus one config change:

- depth-variant fields (`MLPVectorField(weights=...)`): GalNODE, whose weights are
  a truncated series in t (Fourier, polynomial or Chebyshev basis, `terms` of it),
  and stacked NODEs, whose weights are constant on each of `terms` sub-intervals;
- augmentation (`augment=`): zero (ANODE), input-layer (a learned lift) and
  higher-order (a second-order ODE on position and velocity);
- data control (`data_control=true`): the field sees the input, f(z, x, t);
- adaptive depth (`adaptive_depth=true`): the horizon T(x) > 0 is learned from the
  input; the solve runs on s in [0, 1] with the field multiplied by T(x), which is
  the same trajectory as integrating to T(x) for a depth-invariant field;
- integral losses (`integral_weight > 0`): the cross-entropy of the readout along
  the trajectory, integrated as one more state component, so both the adjoint
  (the generalized adjoint) and direct back-propagation differentiate it.

The constants a solve needs (control input, horizon, labels) ride along as state
components with zero rate: the adjoint then returns their gradients too, which is
how the depth network learns (a tensor captured by the field would be invisible to
the adjoint).

`AugmentedODENet` carries the three augmentations over to the image ODE-Net.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from odelab.errors import ConfigError, check_sizes
from odelab.models.augmented import (  # re-exported: configs name them under this module
    AUGMENTATIONS,
    AugmentedConvField,
    AugmentedODENet,
    ConditionedField,
)
from odelab.models.fields import ACTIVATIONS
from odelab.ode import ODEBlock, Sensitivity, Solver, odesolve

GALERKIN_BASES = ("fourier", "polynomial", "chebyshev")
WEIGHTS = ("constant", *GALERKIN_BASES, "stacked")


def basis_values(name: str, terms: int, s: Tensor) -> Tensor:
    """The first `terms` basis functions at s in [0, 1]; the first is always 1.

    fourier: 1, cos 2 pi s, sin 2 pi s, cos 4 pi s, ...; polynomial: s^k;
    chebyshev: T_k(2 s - 1).
    """
    s = s.reshape(())
    values = [torch.ones_like(s)]
    if name == "fourier":
        for k in range(1, terms):
            freq = 2 * math.pi * ((k + 1) // 2)
            values.append(torch.cos(freq * s) if k % 2 else torch.sin(freq * s))
    elif name == "polynomial":
        for k in range(1, terms):
            values.append(s**k)
    elif name == "chebyshev":
        u = 2 * s - 1
        previous, current = values[0], u
        for _ in range(1, terms):
            values.append(current)
            previous, current = current, 2 * u * current - previous
    else:
        raise ConfigError(f"model.net.field.weights={name!r}; choose one of {list(WEIGHTS)}")
    return torch.stack(values)


class DepthVariantLinear(nn.Module):
    """A linear layer whose weights may depend on the depth t in [0, t_end].

    constant: ordinary weights; fourier/polynomial/chebyshev (GalNODE): W(t) =
    sum_k phi_k(t / t_end) W_k over `terms` basis functions; stacked: W_k on the k-th
    of `terms` equal sub-intervals. Only the constant term (or every interval) starts
    from PyTorch's Linear init, so each variant starts as the depth-invariant field.
    """

    def __init__(
        self, d_in: int, d_out: int, weights: str = "constant", terms: int = 1, t_end: float = 1.0
    ):
        super().__init__()
        if weights not in WEIGHTS:
            raise ConfigError(f"model.net.field.weights={weights!r}; choose one of {list(WEIGHTS)}")
        if terms < 1:
            raise ConfigError(f"model.net.field.terms must be >= 1, got {terms}")
        if weights == "constant":
            terms = 1
        self.kind, self.terms, self.t_end = weights, terms, float(t_end)
        init = nn.Linear(d_in, d_out)
        weight = init.weight.detach().unsqueeze(0).repeat(terms, 1, 1)
        bias = init.bias.detach().unsqueeze(0).repeat(terms, 1)
        if weights in GALERKIN_BASES:
            weight[1:] = 0.0
            bias[1:] = 0.0
        self.weight = nn.Parameter(weight)  # (terms, out, in)
        self.bias = nn.Parameter(bias)  # (terms, out)

    def weights_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "constant":
            return self.weight[0], self.bias[0]
        s = t.reshape(()).to(self.weight) / self.t_end
        if self.kind == "stacked":
            k = int(torch.clamp(torch.floor(s * self.terms), 0, self.terms - 1))
            return self.weight[k], self.bias[k]
        phi = basis_values(self.kind, self.terms, s)
        return torch.einsum("k,koi->oi", phi, self.weight), phi @ self.bias

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        weight, bias = self.weights_at(t)
        return F.linear(h, weight, bias)


class MLPVectorField(nn.Module):
    """f(t, z[, x]) as an MLP of depth-variant linear layers.

    Args:
        dim: state dimension (the input width, before the control).
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        activation: one of `odelab.models.fields.ACTIVATIONS`.
        weights: "constant" (depth-invariant), "fourier", "polynomial",
            "chebyshev" (GalNODE) or "stacked".
        terms: basis functions (GalNODE) or sub-intervals (stacked).
        t_end: the horizon the basis is spread over.
        control_dim: width of the data-control input x (0: none).
        out_dim: output width; None = dim (a second-order field returns only
            the acceleration).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 32,
        depth: int = 1,
        activation: str = "tanh",
        weights: str = "constant",
        terms: int = 1,
        t_end: float = 1.0,
        control_dim: int = 0,
        out_dim: int | None = None,
    ):
        super().__init__()
        check_sizes("model.net.field", dim=dim, hidden=hidden, depth=depth)
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.net.field.activation={activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        widths = [dim + control_dim] + [hidden] * depth + [out_dim or dim]
        self.layers = nn.ModuleList(
            DepthVariantLinear(a, b, weights, terms, t_end) for a, b in pairwise(widths)
        )
        self.act = ACTIVATIONS[activation]()
        self.control_dim = control_dim

    def forward(self, t: Tensor, z: Tensor, control: Tensor | None = None) -> Tensor:
        h = z if control is None else torch.cat([z, control], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class SecondOrderField(nn.Module):
    """dq/dt = p, dp/dt = a(t, [q, p]): higher-order augmentation on a flat state [q, p].

    `accel` maps the full state (and the control, if any) to the acceleration.
    """

    def __init__(self, accel: nn.Module | Callable[..., Tensor], position_dim: int):
        super().__init__()
        self.accel = accel
        self.position_dim = position_dim

    def forward(self, t: Tensor, z: Tensor, control: Tensor | None = None) -> Tensor:
        velocity = z[..., self.position_dim :]
        accel = self.accel(t, z) if control is None else self.accel(t, z, control)
        return torch.cat([velocity, accel], dim=-1)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy per sample against one-hot (or soft) targets."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)


class DissectedDynamics(nn.Module):
    """d/ds of (z, *constants[, running loss]) for one solve.

    Which components the state holds is fixed per solve by `begin_solve`: the
    control input x, the horizon T(x) (the rate of z is scaled by it), the
    one-hot labels and the running integral of the readout's cross-entropy.
    """

    def __init__(self, field: nn.Module, readout: nn.Module):
        super().__init__()
        self.field = field
        self.readout = readout  # shared with the classifier; here so the adjoint sees it
        self.slots: tuple[str, ...] = ()

    def begin_solve(self, slots: tuple[str, ...]) -> None:
        self.slots = slots

    def forward(self, t: Tensor, state: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        if isinstance(state, Tensor):  # a bare state: the field alone (trajectories)
            return self.field(t, state)
        parts = dict(zip(("z", *self.slots), state, strict=True))
        z = parts["z"]
        rate = self.field(t, z, parts.get("control"))
        scale = parts.get("horizon")
        if scale is not None:
            rate = scale * rate
        rates = {"z": rate}
        if "integral" in parts:
            running = soft_cross_entropy(self.readout(z), parts["target"])
            rates["integral"] = running if scale is None else scale[:, 0] * running
        return tuple(rates.get(name, torch.zeros_like(value)) for name, value in parts.items())


class DissectedNODE(nn.Module):
    """Lift, one ODE solve, linear readout: the vanilla NODE classifier and its variants.

    Args:
        field: a partial vector field (`_partial_: true`), completed here with its
            state, control and output sizes.
        solver: how the block integrates.
        sensitivity: adjoint or direct back-propagation.
        in_dim: input features.
        num_classes: logits.
        augment: "none", "zero" (append `augment_dim` zeros), "input_layer" (a
            learned linear lift to in_dim + augment_dim) or "higher_order" (state
            [q, p], q = x, p = 0, dq/dt = p, dp/dt = field).
        augment_dim: extra dimensions for zero and input-layer augmentation.
        data_control: the field also sees the input x.
        adaptive_depth: learn the horizon T(x) = t_end * softplus(g(x)) / softplus(0)
            (starts near t_end); the solve runs on [0, 1].
        depth_hidden: width of the depth network g.
        t_end: the horizon (the initial horizon with adaptive depth).
        integral_weight: weight of the integral loss; training then adds
            weight * integral_0^T CE(readout(z(t)), y) dt, integrated with the state.
    """

    def __init__(
        self,
        field: Callable[..., nn.Module],
        solver: Solver | None = None,
        sensitivity: Sensitivity | None = None,
        in_dim: int = 2,
        num_classes: int = 2,
        augment: str = "none",
        augment_dim: int = 0,
        data_control: bool = False,
        adaptive_depth: bool = False,
        depth_hidden: int = 16,
        t_end: float = 1.0,
        integral_weight: float = 0.0,
    ):
        super().__init__()
        check_sizes(in_dim=in_dim, num_classes=num_classes, depth_hidden=depth_hidden)
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"model.net.augment={augment!r}; choose one of {list(AUGMENTATIONS)}")
        if augment in ("zero", "input_layer") and augment_dim < 1:
            raise ConfigError(f"model.net.augment={augment} needs model.net.augment_dim >= 1")
        if augment in ("none", "higher_order") and augment_dim != 0:
            raise ConfigError(
                f"model.net.augment_dim={augment_dim} is unused with augment={augment}; set it to 0"
            )
        if t_end <= 0:
            raise ConfigError(f"model.net.t_end must be > 0, got {t_end}")
        if integral_weight < 0:
            raise ConfigError(f"model.net.integral_weight must be >= 0, got {integral_weight}")
        self.augment, self.augment_dim, self.in_dim = augment, augment_dim, in_dim
        self.data_control, self.adaptive_depth = data_control, adaptive_depth
        self.integral_weight, self.t_end = integral_weight, t_end
        control_dim = in_dim if data_control else 0
        # With adaptive depth the solve runs on [0, 1]: the basis of a depth-variant field too.
        field_t_end = 1.0 if adaptive_depth else t_end
        if augment == "higher_order":
            self.state_dim = 2 * in_dim
            accel = field(
                dim=self.state_dim, control_dim=control_dim, out_dim=in_dim, t_end=field_t_end
            )
            vector_field: nn.Module = SecondOrderField(accel, in_dim)
        else:
            self.state_dim = in_dim + augment_dim
            vector_field = field(dim=self.state_dim, control_dim=control_dim, t_end=field_t_end)
        self.lift = nn.Linear(in_dim, self.state_dim) if augment == "input_layer" else None
        self.readout = nn.Linear(self.state_dim, num_classes)
        self.depth_net = (
            nn.Sequential(nn.Linear(in_dim, depth_hidden), nn.Tanh(), nn.Linear(depth_hidden, 1))
            if adaptive_depth
            else None
        )
        self.dynamics = DissectedDynamics(vector_field, self.readout)
        span = (0.0, 1.0) if adaptive_depth else (0.0, t_end)
        self.block = ODEBlock(self.dynamics, solver, sensitivity, t=span, name="model.net.field")
        self.last_integral: Tensor | None = None
        self.last_horizon: Tensor | None = None

    @property
    def field(self) -> nn.Module:
        return self.dynamics.field

    def initial_state(self, x: Tensor) -> Tensor:
        if self.lift is not None:
            return self.lift(x)
        if self.augment == "none":
            return x
        return torch.cat([x, x.new_zeros(x.shape[0], self.state_dim - self.in_dim)], dim=1)

    def horizon(self, x: Tensor) -> Tensor:
        """T(x) per sample, shape (N, 1); the fixed t_end without adaptive depth."""
        if self.depth_net is None:
            return x.new_full((x.shape[0], 1), self.t_end)
        return self.t_end * F.softplus(self.depth_net(x)) / math.log(2.0)

    def _state(
        self, x: Tensor, labels: Tensor | None
    ) -> tuple[tuple[str, ...], tuple[Tensor, ...]]:
        slots: list[str] = []
        values: list[Tensor] = [self.initial_state(x)]
        if self.data_control:
            slots.append("control")
            values.append(x)
        if self.depth_net is not None:
            self.last_horizon = self.horizon(x)
            slots.append("horizon")
            values.append(self.last_horizon)
        if labels is not None:
            num_classes = self.readout.out_features
            slots += ["target", "integral"]
            values += [F.one_hot(labels, num_classes).to(x.dtype), x.new_zeros(x.shape[0])]
        return tuple(slots), tuple(values)

    def solve(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Final state and, given labels, the integral of the running cross-entropy."""
        slots, state = self._state(x, labels)
        self.dynamics.begin_solve(slots)
        out = self.block(state if slots else state[0])
        out = (out,) if isinstance(out, Tensor) else out
        parts = dict(zip(("z", *slots), out, strict=True))
        return parts["z"], parts.get("integral")

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits; with labels (training with an integral loss) `last_integral` is set too."""
        wants_integral = labels is not None and self.integral_weight > 0
        z, integral = self.solve(x, labels if wants_integral else None)
        self.last_integral = integral
        return self.readout(z)

    @torch.no_grad()
    def trajectory(self, x: Tensor, n_points: int) -> Tensor:
        """States at `n_points` depths from 0 to the horizon, shape (n_points, N, state_dim)."""
        slots, state = self._state(x, None)
        self.dynamics.begin_solve(slots)
        span = self.block.t
        times = torch.linspace(float(span[0]), float(span[-1]), n_points, dtype=x.dtype)
        out = odesolve(
            self.dynamics,
            state if slots else state[0],
            times,
            self.block.solver,
            name="model.net.field",
        )
        return out if isinstance(out, Tensor) else out[0]


__all__ = [
    "AUGMENTATIONS",
    "GALERKIN_BASES",
    "WEIGHTS",
    "AugmentedConvField",
    "AugmentedODENet",
    "ConditionedField",
    "DepthVariantLinear",
    "DissectedDynamics",
    "DissectedNODE",
    "MLPVectorField",
    "SecondOrderField",
    "basis_values",
    "soft_cross_entropy",
]

"""Discrete residual flow (formula (6)) and a closed-form nonlinear field for formula (7).

Issue 43 compares the discrete log-determinant sum of a residual flow,
log p(x) = log p(z_N) + sum_k log|det(I + h df/dz(z_k))|, with the continuous
trace integral of a CNF on the same field. The diagonal field dz_i/dt = a_i tanh(z_i)
is integrable per coordinate: sinh(z_i(t)) = sinh(z_i(0)) exp(a_i t), which gives the
flow and its Jacobian determinant in closed form, an independent truth for both. The
linear field dz/dt = A z (flow exp(A t) z, log-det t tr A) is the second closed form.

`ResidualFlow` is also a model of the density task (`conf/model/residual_flow.yaml`): it has
the `log_prob` / `sample` / `trajectory` interface of the CNF and the planar flow.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from odelab.errors import ConfigError
from odelab.models.cnf import FlowOutput, standard_normal_log_prob

# Fixed-point iterations of the inverse x = y - h f(x); the error contracts by Lip(h f) < 1
# per iteration, so 200 of them reach float precision for Lip <= 0.9.
INVERSE_ITERATIONS = 200


def tanh_field_flow(z0: Tensor, a: Tensor, t: float) -> Tensor:
    """Exact flow of dz_i/dt = a_i tanh(z_i) from z0 over time t (elementwise)."""
    return torch.asinh(torch.sinh(z0) * torch.exp(a * t))


def tanh_field_log_det(z0: Tensor, a: Tensor, t: float) -> Tensor:
    """log|det dz(t)/dz0| per sample for the tanh field.

    Differentiating sinh(z(t)) = sinh(z0) e^{a t} in z0 gives
    dz(t)/dz0 = cosh(z0) e^{a t} / cosh(z(t)), and the Jacobian is diagonal.
    """
    zt = tanh_field_flow(z0, a, t)
    per_coord = torch.log(torch.cosh(z0)) + a * t - torch.log(torch.cosh(zt))
    return per_coord.sum(dim=-1)


def linear_field_flow(z0: Tensor, A: Tensor, t: float) -> Tensor:
    """Exact flow of dz/dt = A z over time t: z(t) = exp(A t) z0 (rows of z0 are samples)."""
    return z0 @ torch.linalg.matrix_exp(A * t).T


def linear_field_log_det(z0: Tensor, A: Tensor, t: float) -> Tensor:
    """log|det exp(A t)| = t tr(A), the same for every sample (Jacobi's formula)."""
    return torch.full(z0.shape[:1], float(t * torch.trace(A)), dtype=z0.dtype)


class LinearField(nn.Module):
    """The closed-form field f(t, z) = A z as a CNF field (time-independent)."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.A.T


class TanhField(nn.Module):
    """The closed-form field f(t, z) = a * tanh(z) as a CNF field (time-independent)."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.a * torch.tanh(z)


class LipschitzMLP(nn.Module):
    """An MLP whose Lipschitz constant is at most `coeff`.

    Each linear map is spectrally normalised (norm 1) and tanh is 1-Lipschitz, so the
    composition is 1-Lipschitz; the output is scaled by `coeff`. A residual step
    z + h f(z) is invertible when h * coeff < 1 (`ResidualFlow` checks it).
    """

    def __init__(self, dim: int, width: int = 64, depth: int = 2, coeff: float = 0.9) -> None:
        super().__init__()
        if not coeff > 0.0:
            raise ConfigError(f"model.flow.coeff must be > 0, got {coeff}")
        sizes = [dim, *([width] * depth), dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(spectral_norm(nn.Linear(n_in, n_out)))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.coeff = coeff

    def forward(self, z: Tensor) -> Tensor:
        return self.coeff * self.net(z)

    def with_jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(f(z), df/dz) per sample, the Jacobian by the chain rule W_L S_{L-1} ... S_1 W_1
        (S_k = diag tanh'), which needs no functorch transform of the parametrised weights."""
        jac: Tensor | None = None
        h = z
        for layer in self.net:
            if isinstance(layer, nn.Tanh):
                h = torch.tanh(h)
                jac = (1 - h.pow(2))[:, :, None] * jac
            else:
                weight = layer.weight
                h = h @ weight.T + layer.bias
                jac = weight.expand(z.shape[0], -1, -1) if jac is None else weight @ jac
        return self.coeff * h, self.coeff * jac


def batch_jacobian(field: nn.Module, z: Tensor) -> Tensor:
    """df/dz per sample, shape (B, D, D), via torch.func (one vmap over jacrev)."""
    return torch.func.vmap(torch.func.jacrev(field))(z)


class ResidualFlow(nn.Module):
    """N residual steps z <- z + h f_k(z) with the exact log-det of formula (6).

    With Lip(h f_k) <= h * coeff < 1 each step is invertible (Banach fixed point), so
    the density is well defined; the log-det uses slogdet of I + h J (Theta(D^3)).

    Args:
        dim: data dimension D.
        steps: number of residual maps N (depth).
        h: step size; the flow spans time N * h like a CNF on [0, N h].
        width: hidden width of each map.
        depth: hidden layers of each map.
        coeff: Lipschitz bound of each map before scaling by h (h * coeff < 1).
        shared: one field for all steps (the CNF analogue) instead of one per step.
    """

    supported_regularizers: tuple[str, ...] = ()

    def __init__(
        self,
        dim: int,
        steps: int = 4,
        h: float = 0.25,
        width: int = 64,
        depth: int = 2,
        coeff: float = 0.9,
        shared: bool = False,
    ) -> None:
        super().__init__()
        if steps < 1 or h <= 0:
            raise ConfigError(f"model.flow.steps must be >= 1 and h > 0, got {steps}, {h}")
        if h * coeff >= 1.0:
            raise ConfigError(
                f"model.flow.h * model.flow.coeff must be < 1 for invertibility, got "
                f"{h * coeff:g}; lower coeff"
            )
        n_fields = 1 if shared else steps
        self.fields = nn.ModuleList(
            LipschitzMLP(dim, width, depth=depth, coeff=coeff) for _ in range(n_fields)
        )
        self.steps, self.h = steps, h

    def field(self, k: int) -> nn.Module:
        return self.fields[0] if len(self.fields) == 1 else self.fields[k]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to base; returns (z_N, sum_k log|det(I + h J_k)|) per sample."""
        z, log_det = x, x.new_zeros(x.shape[0])
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        # One spectral normalisation (power iteration) per forward, not one per weight access.
        with parametrize.cached():
            for k in range(self.steps):
                f, jac = self.field(k).with_jacobian(z)
                log_det = log_det + torch.linalg.slogdet(eye + self.h * jac).logabsdet
                z = z + self.h * f
        return z, log_det

    def log_prob(
        self, x: Tensor, estimator: str | None = None, regularizers: Sequence[str] = ()
    ) -> FlowOutput:
        """log p(x) under a standard normal base by formula (6); `estimator` is ignored
        (the log-det is exact)."""
        if regularizers:
            raise ConfigError(
                "the residual flow has no regularizers; set model.kinetic_weight and "
                "model.jacobian_weight to 0"
            )
        z, log_det = self(x)
        return FlowOutput(log_prob=standard_normal_log_prob(z) + log_det, base=z)

    def to_base(self, x: Tensor) -> Tensor:
        return self(x)[0]

    def _invert_step(self, k: int, y: Tensor) -> Tensor:
        """x with x + h f_k(x) = y by fixed-point iteration (a contraction: Lip < 1)."""
        x = y
        for _ in range(INVERSE_ITERATIONS):
            x, previous = y - self.h * self.field(k)(x), x
            if (x - previous).abs().max() < 1e-6:
                break  # converged (the contraction leaves nothing to gain)
        return x

    @torch.no_grad()
    def trajectory(self, z: Tensor, n_frames: int) -> Tensor:
        """Base (frame 0) -> data (last frame), frames spread evenly over the steps."""
        keep = {round(i * self.steps / (n_frames - 1)) for i in range(n_frames)}
        frames, x = [z] if 0 in keep else [], z
        with parametrize.cached():
            for done, k in enumerate(reversed(range(self.steps)), start=1):
                x = self._invert_step(k, x)
                if done in keep:
                    frames.append(x)
        return torch.stack(frames)

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """Base -> data by inverting the steps."""
        return self.trajectory(z, 2)[-1]

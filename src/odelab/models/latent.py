"""Recurrent networks for irregular times (ODE-RNN, RNN with time gaps) and Gaussian helpers.

`ObservationRNN` walks the union of a batch's times (forward or backward). Between two
times a series' hidden state is carried either by an ODE (ODE-RNN, Rubanova et al.
2019, solved through `ODEBlock`) or by a GRU step fed the time gap (the classic
RNN-with-gaps baseline); at a time where the series has an observation a GRU cell
takes it in. Masks keep the series of one batch independent of each other: a
series' state stays at zero until its first observation, gaps are measured from
the series' own previous point, and columns where it has nothing leave it unchanged
(the ODE flow through an extra output time changes nothing up to solver tolerance).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Sensitivity, Solver

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu_q: Tensor, std_q: Tensor, mu_p: Tensor, std_p: Tensor) -> Tensor:
    """KL(N(mu_q, std_q^2) || N(mu_p, std_p^2)), summed over the last axis."""
    var_ratio = (std_q / std_p) ** 2
    mean_term = ((mu_q - mu_p) / std_p) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0 - torch.log(var_ratio)).sum(-1)


def gaussian_log_density(x: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """Elementwise log N(x; mean, std^2)."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    return -0.5 * (((x - mean) / std) ** 2 + LOG_2PI) - torch.log(std)


class ObservationRNN(nn.Module):
    """A GRU over irregular observations whose state evolves between times.

    Args:
        input_dim: channels of an observation.
        hidden: hidden state size.
        evolve: "ode" (ODE-RNN: the state follows `dh/dt = field(h)` between times) or
            "gaps" (RNN: a GRU step fed the time since the series' previous point).
        field_hidden: width of the ODE field's hidden layers ("ode" only).
        field_depth: hidden layers of the ODE field ("ode" only).
        solver, sensitivity: how the hidden-state ODE is solved ("ode" only).
        name: config key of the field, for error messages.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        evolve: str = "ode",
        field_hidden: int = 32,
        solver: Solver | None = None,
        sensitivity: Sensitivity | None = None,
        name: str = "model.rnn",
        field_depth: int = 1,
    ):
        super().__init__()
        if evolve not in ("ode", "gaps"):
            raise ConfigError(f"{name}.evolve={evolve!r}; choose 'ode' (ODE-RNN) or 'gaps' (RNN)")
        self.evolve, self.hidden = evolve, hidden
        # Input: the value, a flag saying whether it is observed, the time gap (0 for "ode").
        self.cell = nn.GRUCell(input_dim + 2, hidden)
        self.block: ODEBlock | None = None
        if evolve == "ode":
            from odelab.models.fields import MLPField

            field = MLPField(
                hidden, field_hidden, depth=field_depth, activation="tanh", init_std=0.1
            )
            self.block = ODEBlock(
                field, solver, sensitivity, return_trajectory=False, name=f"{name}.field"
            )

    def _step(self, x: Tensor, observed: Tensor, gap: Tensor, h: Tensor) -> Tensor:
        return self.cell(torch.cat([x * observed[:, None], observed[:, None], gap[:, None]], -1), h)

    def forward(
        self,
        times: Tensor,
        values: Tensor,
        observe: Tensor,
        active: Tensor | None = None,
        reverse: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Walk the times; return the states before each column's update and the final state.

        Args:
            times: (T,) increasing union times.
            values: (B, T, D).
            observe: (B, T) bool, where a series' value is fed to the cell.
            active: (B, T) bool, where a series has a point at all (observed or queried);
                the "gaps" RNN steps only there. Defaults to `observe`.
            reverse: walk from the last time to the first.

        Returns:
            states (B, T, H): each series' state at each time before that time's
            observation (what a prediction at that time may use), and the final state (B, H).
        """
        active = observe if active is None else active | observe
        batch, steps = observe.shape
        h = values.new_zeros(batch, self.hidden)
        zero = values.new_zeros(batch)
        started = torch.zeros(batch, dtype=torch.bool, device=values.device)
        last_t = values.new_zeros(batch)
        states = []
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        prev: Tensor | None = None
        for i in order:
            t = times[i]
            if self.block is not None:
                # A zero-length gap needs no solve: the ODE-RNN reduces to its GRU cell.
                if prev is not None and bool(t != prev) and bool(started.any()):
                    evolved = self.block(h, torch.stack([prev, t]))
                    h = torch.where(started[:, None], evolved, h)
                states.append(h)
                h_obs = self._step(values[:, i], observe[:, i].to(h.dtype), zero, h)
            else:
                gap = torch.where(started, (t - last_t).abs(), zero)
                # The state at this time before its value: a GRU step fed only the gap.
                h_gap = self._step(values[:, i], zero, gap, h)
                states.append(torch.where(active[:, i, None], h_gap, h))
                h_obs = self._step(values[:, i], observe[:, i].to(h.dtype), gap, h)
                h = torch.where(active[:, i, None], h_gap, h)
                last_t = torch.where(active[:, i], t, last_t)
                started = started | active[:, i]
            h = torch.where(observe[:, i, None], h_obs, h)
            if self.block is not None:
                started = started | observe[:, i]
            prev = t
        out = torch.stack(states[::-1] if reverse else states, dim=1)
        return out, h


class PosteriorEncoder(nn.Module):
    """q(z0 | observed points): an `ObservationRNN` walked backward, then a linear head.

    The recurrent network walks the observed times of a batch from the last to the first
    column of the union (`times[0]`, the time of z0), so the state it ends in summarises
    every observation; a linear map of it gives the posterior's mean and, through a
    softplus, its standard deviation.

    Args:
        rnn: the recurrent network (ODE-RNN, or the RNN fed the time gaps).
        latent_dim: size of z0.
    """

    def __init__(self, rnn: ObservationRNN, latent_dim: int):
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {latent_dim}")
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, times: Tensor, values: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std (B, L) of q(z0 | the points where `context` (B, T) is set).

        Only the columns some series observes are walked, plus `times[0]`: the RNN
        fed the time gaps also steps over the gap back to the start of the grid.
        """
        cols = context.any(0)
        cols[0] = True
        observed = context[:, cols]
        active = observed.clone()
        active[:, 0] = True
        _, h = self.rnn(times[cols], values[:, cols], observed, active, reverse=True)
        mean, raw_std = self.head(h).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw_std) + 1e-4


class LatentDecoder(nn.Module):
    """A latent ODE solved from z0 through `ODEBlock`, read out linearly.

    Args:
        field: the latent vector field (input and output size `latent_dim`).
        solver, sensitivity: how the latent ODE is solved.
        latent_dim: size of z0.
        output_dim: channels of the series.
    """

    def __init__(
        self,
        field: nn.Module,
        solver: Solver,
        sensitivity: Sensitivity,
        latent_dim: int,
        output_dim: int = 1,
    ):
        super().__init__()
        if output_dim < 1:
            raise ConfigError(f"model.decoder.output_dim must be >= 1, got {output_dim}")
        self.block = ODEBlock(
            field, solver, sensitivity, return_trajectory=True, name="model.decoder.field"
        )
        self.readout = nn.Linear(latent_dim, output_dim)
        self.latent_dim = latent_dim

    def forward(self, z0: Tensor, times: Tensor) -> Tensor:
        """Observation means (..., T, D) of latent initial states z0 (..., L) at `times`.

        The solve starts at `times[0]`: z0 is the latent state at that time.
        """
        flat = z0.reshape(-1, self.latent_dim)
        z = self.block(flat, times)  # (T, N, L)
        out = self.readout(z).transpose(0, 1)  # (N, T, D)
        return out.reshape(*z0.shape[:-1], *out.shape[1:])


def mlp_readout(hidden: int, output_dim: int = 1, width: int | None = None) -> nn.Sequential:
    """The recurrent baselines' readout: one tanh hidden layer from the state to a value.

    Args:
        hidden: the recurrent state's size.
        output_dim: channels of the series.
        width: units of the hidden layer (None: `hidden`).
    """
    width = hidden if width is None else width
    if width < 1:
        raise ConfigError(f"model.readout.width must be >= 1 or null, got {width}")
    return nn.Sequential(nn.Linear(hidden, width), nn.Tanh(), nn.Linear(width, output_dim))

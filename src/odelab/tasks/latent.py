"""Generative and recurrent models of irregularly sampled time series (Rubanova et al. 2019).

- `LatentODE`: an encoder (ODE-RNN or RNN with time gaps) runs backward in time over
  the observed points to the start of the grid and gives q(z0 | x); a latent ODE
  solved through `ODEBlock` from z0 over the batch's union of times, read out
  linearly, gives the mean of a Gaussian observation model with fixed std. Trained
  on the ELBO with a KL weight that warms up from 0 to 1; evaluated with the IWAE
  bound over K posterior samples.
- `RecurrentForecaster`: the deterministic baselines, run forward in time: the
  ODE-RNN and the RNN fed the time gaps, predicting each point from the state just
  before it, trained on the mean squared error.

Both score every point a series has in the batch (observed, held-out and future;
the encoder sees only the observed ones) and only those: the masks of
`IrregularBatch` drop the padding of the union of times from every loss and metric.
Metrics (val/ and test/): `interp_mse` on held-out points inside the observation
window, `extrap_mse` on the future window (both against the noise-free values where
the data have them), and for the latent ODE `elbo` and `iwae` (nats per series).
After testing, `extrap_by_gap.json` in the run folder holds the future points' squared error
binned by the time since the series' last observed point (`GAP_BINS` equal bins).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from odelab.callbacks import writes_logs_now
from odelab.data.irregular import IrregularBatch
from odelab.errors import ConfigError
from odelab.models.latent import (
    LatentDecoder,
    ObservationRNN,
    PosteriorEncoder,
    gaussian_kl,
    gaussian_log_density,
)
from odelab.plotting import series_figures
from odelab.tasks.base import OdelabTask

SCORE_ON = ("all", "future")
# The baselines may also train on the observation window alone, as the reference's ODE-RNN does
# (each observed and held-out point predicted from the state before it, from the series' first
# observation on, that one excluded: the future window is never scored).
FORECAST_SCORE_ON = (*SCORE_ON, "observed")
DECODE_FROM = ("grid_start", "first_future")
ELBO_FORMS = ("odelab", "authors")
KL_SCHEDULES = ("linear", "authors")
GAP_BINS = 10


def masked_mse(pred: Tensor, truth: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Mean squared error over the masked points (B, T) of (B, T, D) tensors, and their count."""
    count = int(mask.sum())
    err = ((pred - truth) ** 2).sum(-1) * mask
    return err.sum() / max(count * truth.shape[-1], 1), count


class IrregularSeriesTask(OdelabTask):
    """Shared evaluation and figures; subclasses implement `predict` and `training_step`."""

    plot_series = 4

    def __init__(self, torch_threads: int | None = 1, **optim: object):
        super().__init__(**optim)
        if torch_threads is not None and torch_threads < 1:
            raise ConfigError(f"model.torch_threads must be >= 1 or null, got {torch_threads}")
        self.torch_threads = torch_threads

    def setup(self, stage: str) -> None:
        # The steps are long chains of tiny ops (one GRU cell and one short solve per
        # time): intra-op threads cost more than they give, and on a shared CPU they
        # slowed a step by two orders of magnitude. null keeps torch's default.
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)

    def predict(self, batch: IrregularBatch) -> tuple[Tensor, Tensor | None]:
        """Mean prediction (B, T, D) at every column, and samples (K, B, T, D) or None."""
        raise NotImplementedError

    def _log_mse(self, stage: str, pred: Tensor, batch: IrregularBatch, start: int = 0) -> None:
        # Columns before `start` have no prediction (a decoder solving from a later time).
        interp = batch.interp.clone()
        interp[:, :start] = False
        for name, mask in (("interp_mse", interp), ("extrap_mse", batch.extrap)):
            value, count = masked_mse(pred, batch.truth, mask)
            if count:  # weighted by points, so the epoch value is the mean over all points
                self.log(f"{stage}/{name}", value, batch_size=count, prog_bar=stage == "val")
        if stage == "test" and batch.extrap.any():  # for extrap_by_gap.json
            observed_at = torch.where(batch.context, batch.times, -math.inf).amax(1)
            gap = batch.times[None, :] - observed_at[:, None]
            err = ((pred - batch.truth) ** 2).mean(-1)
            self._gaps.append((gap[batch.extrap].cpu(), err[batch.extrap].cpu()))

    def validation_step(self, batch: IrregularBatch, batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: IrregularBatch, batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._gaps: list[tuple[Tensor, Tensor]] = []

    def on_test_epoch_end(self) -> None:
        """`extrap_by_gap.json`: the future points' MSE by time since the last observation."""
        if not self._gaps or self._trainer is None or not self.trainer.is_global_zero:
            return
        gap, err = (torch.cat(parts).double() for parts in zip(*self._gaps, strict=True))
        edges = torch.linspace(0.0, float(gap.max()), GAP_BINS + 1, dtype=torch.float64)
        bins = torch.bucketize(gap, edges[1:-1], right=True)
        count = torch.bincount(bins, minlength=GAP_BINS)
        total = torch.bincount(bins, weights=err, minlength=GAP_BINS)
        mse = [float(t / c) if c else None for t, c in zip(total, count, strict=True)]
        record = {"edges": edges.tolist(), "mse": mse, "count": count.tolist()}
        path = Path(self.trainer.default_root_dir) / "extrap_by_gap.json"
        path.write_text(json.dumps(record, indent=1) + "\n")

    def evaluate(self, batch: IrregularBatch, stage: str) -> None:
        pred, _ = self.predict(batch)
        self._log_mse(stage, pred, batch)

    @torch.no_grad()
    def figures(self) -> dict[str, Figure]:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or "test" not in data.splits:
            return {}
        split = data.splits["test"]
        rows = list(range(min(self.plot_series, len(split))))
        batch = _to(split.dense(rows), self.device)
        pred, samples = self.predict(batch)
        return series_figures(
            batch,
            pred.cpu(),
            None if samples is None else samples.cpu(),
            data.t_observed,
            type(self).__name__,
        )


def _to(batch: IrregularBatch, device: torch.device) -> IrregularBatch:
    return IrregularBatch(**{k: v.to(device) for k, v in vars(batch).items()})


class LatentODE(IrregularSeriesTask):
    """Latent ODE from a posterior encoder and an ODE decoder (see the module docstring).

    The task owns the likelihood, the prior, the bounds and their schedule; the networks
    come built (`odelab.models.latent.PosteriorEncoder`, `LatentDecoder`).

    Args:
        encoder: q(z0 | observed points).
        decoder: z0 and times to observation means.
        input_dim: channels of the series; the decoder's output size must equal it.
        latent_dim: size of z0 (of the standard normal prior); the encoder's and the
            decoder's must equal it.
        obs_std: std of the Gaussian observation model.
        kl_warmup_steps: training steps over which the KL weight rises linearly from 0
            to 1 (0: always 1; kl_schedule=linear).
        iwae_samples: posterior samples K of the IWAE bound and of the mean prediction
            at evaluation.
        score_on: "all" (every point a series has: observed, held-out, future) or
            "future" (the future window only), for the likelihood and the bounds.
        decode_from: "grid_start" (z0 is the latent state at `times[0]`) or
            "first_future" (the decoder's solve starts at the batch's first future time,
            as the reference's extrapolation mode does; needs score_on=future).
        elbo: "odelab" (the annealed ELBO summed over points and series, divided by the
            batch's scored points) or "authors" (the reference's: per-series mean
            log-likelihood over points, KL averaged over latent dimensions, minus the
            log-sum-exp over the `train_samples` samples).
        kl_schedule: "linear" (kl_warmup_steps) or "authors" (0 for the first 10
            epochs, then 1 - 0.99^(epoch - 10), the epoch counted as the reference does).
        train_samples: posterior samples per training step.
        torch_threads: intra-op threads (1: fastest for these small sequential steps).
    """

    # Checkpoints written before the networks moved to odelab.models.latent (issue 45):
    # old state-dict prefix -> new one, applied on load.
    LEGACY_KEYS = {
        "encoder.cell.": "encoder.rnn.cell.",
        "encoder.block.": "encoder.rnn.block.",
        "to_posterior.": "encoder.head.",
        "decoder.func.": "decoder.block.func.",
        "readout.": "decoder.readout.",
    }

    def __init__(
        self,
        encoder: PosteriorEncoder,
        decoder: LatentDecoder,
        input_dim: int = 1,
        latent_dim: int = 6,
        obs_std: float = 0.1,
        kl_warmup_steps: int = 100,
        iwae_samples: int = 10,
        score_on: str = "all",
        decode_from: str = "grid_start",
        elbo: str = "odelab",
        kl_schedule: str = "linear",
        train_samples: int = 1,
        **optim: object,
    ):
        super().__init__(**optim)
        for key, value, choices in (
            ("score_on", score_on, SCORE_ON),
            ("decode_from", decode_from, DECODE_FROM),
            ("elbo", elbo, ELBO_FORMS),
            ("kl_schedule", kl_schedule, KL_SCHEDULES),
        ):
            if value not in choices:
                raise ConfigError(f"model.{key}={value!r}; choose one of {list(choices)}")
        if decode_from == "first_future" and score_on != "future":
            raise ConfigError(
                "model.decode_from=first_future cannot score points before the first future "
                "time; set model.score_on=future"
            )
        if train_samples < 1:
            raise ConfigError(f"model.train_samples must be >= 1, got {train_samples}")
        if obs_std <= 0:
            raise ConfigError(f"model.obs_std must be > 0, got {obs_std}")
        if iwae_samples < 1:
            raise ConfigError(f"model.iwae_samples must be >= 1, got {iwae_samples}")
        if kl_warmup_steps < 0:
            raise ConfigError(f"model.kl_warmup_steps must be >= 0, got {kl_warmup_steps}")
        for key, module in (("encoder", encoder), ("decoder", decoder)):
            if module.latent_dim != latent_dim:
                raise ConfigError(
                    f"model.{key}.latent_dim={module.latent_dim} but model.latent_dim="
                    f"{latent_dim}; set model.latent_dim (the parts follow it)"
                )
        if decoder.readout.out_features != input_dim:
            raise ConfigError(
                f"model.decoder.output_dim={decoder.readout.out_features} but model.input_dim="
                f"{input_dim}; set model.input_dim (the parts follow it)"
            )
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.obs_std = latent_dim, obs_std
        self.kl_warmup_steps, self.iwae_samples = kl_warmup_steps, iwae_samples
        self.score_on, self.decode_from, self.elbo = score_on, decode_from, elbo
        self.kl_schedule, self.train_samples = kl_schedule, train_samples

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        if "to_posterior.weight" not in state:
            return
        renamed = {}
        for key, value in state.items():
            old = next((p for p in self.LEGACY_KEYS if key.startswith(p)), None)
            renamed[key if old is None else self.LEGACY_KEYS[old] + key[len(old) :]] = value
        checkpoint["state_dict"] = renamed

    def encode(self, batch: IrregularBatch) -> tuple[Tensor, Tensor]:
        """Mean and std (B, L) of q(z0 | observed points), walking back to `times[0]`."""
        return self.encoder(batch.times, batch.values, batch.context)

    def decode(self, z0: Tensor, times: Tensor) -> Tensor:
        """Observation means (..., T, D) of latent initial states z0 (..., L) at `times`."""
        return self.decoder(z0, times)

    def scored(self, batch: IrregularBatch) -> Tensor:
        """(B, T) bool: the points the likelihood and the bounds score (`score_on`)."""
        return batch.extrap if self.score_on == "future" else batch.target

    def decode_start(self, batch: IrregularBatch) -> int:
        """Column where the decoder's solve starts (0 unless decode_from=first_future)."""
        if self.decode_from == "grid_start":
            return 0
        future = batch.extrap.any(0).nonzero()
        return int(future[0]) if future.numel() else 0

    def decode_batch(self, z0: Tensor, batch: IrregularBatch) -> Tensor:
        """Observation means (..., B, T, D) at every column of the batch; columns before the
        decoder's start (decode_from=first_future) hold zeros and are never scored."""
        start = self.decode_start(batch)
        pred = self.decode(z0, batch.times[start:])
        if start == 0:
            return pred
        pad = pred.new_zeros(*pred.shape[:-2], start, pred.shape[-1])
        return torch.cat([pad, pred], dim=-2)

    def log_likelihood(self, pred: Tensor, batch: IrregularBatch) -> Tensor:
        """log p(x | z) summed over each series' scored points: (..., B)."""
        log_p = gaussian_log_density(batch.values, pred, self.obs_std).sum(-1)
        return (log_p * self.scored(batch)).sum(-1)

    def posterior_log_likelihood(self, batch: IrregularBatch) -> Tensor:
        """log p(x | z0 = posterior mean) per series (B,): deterministic, for checks."""
        mean, _ = self.encode(batch)
        return self.log_likelihood(self.decode_batch(mean, batch), batch)

    def bounds(self, batch: IrregularBatch, k: int) -> dict[str, Tensor]:
        """Per-series ELBO terms and the IWAE bound with k posterior samples."""
        mean, std = self.encode(batch)
        eps = torch.randn(k, *mean.shape, dtype=mean.dtype, device=mean.device)
        z0 = mean + std * eps  # (K, B, L)
        pred = self.decode_batch(z0, batch)  # (K, B, T, D)
        log_lik = self.log_likelihood(pred, batch)  # (K, B)
        kl = gaussian_kl(mean, std, torch.zeros_like(mean), torch.ones_like(std))
        log_w = (
            log_lik
            + gaussian_log_density(z0, 0.0, 1.0).sum(-1)
            - gaussian_log_density(z0, mean, std).sum(-1)
        )
        iwae = torch.logsumexp(log_w, dim=0) - math.log(k)
        return {
            "log_lik": log_lik.mean(0),
            "log_lik_samples": log_lik,
            "kl": kl,
            "iwae": iwae,
            "samples": pred,
        }

    def kl_weight(self) -> float:
        if self.kl_schedule == "authors":
            # run_models.py: the weight of iteration itr (from 1) uses itr // batches.
            batches = self.trainer.num_training_batches if self._trainer is not None else 0
            epoch = (self.global_step + 1) // batches if batches else self.current_epoch
            return 0.0 if epoch < 10 else 1.0 - 0.99 ** (epoch - 10)
        if self.kl_warmup_steps == 0:
            return 1.0
        return min(1.0, self.global_step / self.kl_warmup_steps)

    def training_loss(self, batch: IrregularBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The training objective of `elbo` with `train_samples` posterior samples."""
        terms = self.bounds(batch, self.train_samples)
        scored = self.scored(batch)
        if self.elbo == "authors":
            # Per series, the mean log-density of its scored points (0 without any);
            # then the mean over series, and the KL's mean over series and dimensions.
            counts = scored.sum(-1).clamp_min(1)
            per_series = terms["log_lik_samples"] / counts  # (K, B)
            kl = terms["kl"].mean() / self.latent_dim
            objective = per_series.mean(-1) - self.kl_weight() * kl  # (K,)
            return -torch.logsumexp(objective, dim=0), terms
        points = scored.sum().clamp_min(1)
        elbo = terms["log_lik"] - self.kl_weight() * terms["kl"]
        return -elbo.sum() / points, terms

    def training_step(self, batch: IrregularBatch, batch_idx: int) -> Tensor:
        loss, terms = self.training_loss(batch)
        if writes_logs_now(self.trainer):
            size = len(batch)
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            self.log("train/elbo", (terms["log_lik"] - terms["kl"]).mean(), batch_size=size)
            self.log("train/kl", terms["kl"].mean(), batch_size=size)
            self.log("train/kl_weight", self.kl_weight(), batch_size=size)
        return loss

    def predict(self, batch: IrregularBatch) -> tuple[Tensor, Tensor | None]:
        samples = self.bounds(batch, self.iwae_samples)["samples"]
        return samples.mean(0), samples

    def evaluate(self, batch: IrregularBatch, stage: str) -> None:
        terms = self.bounds(batch, self.iwae_samples)
        size = len(batch)
        self.log(f"{stage}/elbo", (terms["log_lik"] - terms["kl"]).mean(), batch_size=size)
        self.log(f"{stage}/iwae", terms["iwae"].mean(), batch_size=size)
        self._log_mse(stage, terms["samples"].mean(0), batch, self.decode_start(batch))


class RecurrentForecaster(IrregularSeriesTask):
    """Deterministic ODE-RNN or RNN-with-gaps baseline (see the module docstring).

    Args:
        rnn: the recurrent network run forward (`odelab.models.latent.ObservationRNN`).
        readout: state to value (`odelab.models.latent.mlp_readout`).
        score_on: the training loss's points: "all" (every point a series has), "future"
            (the future window only: the reference's extrapolation mode) or "observed" (the
            observation window: observed and held-out points after each series' first
            observation, one step ahead, as the reference trains its ODE-RNN; its public code
            has no ODE-RNN extrapolation mode).
        torch_threads: intra-op threads (1: fastest for these small sequential steps).
    """

    def __init__(
        self, rnn: ObservationRNN, readout: nn.Module, score_on: str = "all", **optim: object
    ):
        super().__init__(**optim)
        if score_on not in FORECAST_SCORE_ON:
            raise ConfigError(
                f"model.score_on={score_on!r}; choose one of {list(FORECAST_SCORE_ON)}"
            )
        self.rnn, self.readout, self.score_on = rnn, readout, score_on

    def predict(self, batch: IrregularBatch) -> tuple[Tensor, Tensor | None]:
        states, _ = self.rnn(batch.times, batch.values, batch.context, batch.query)
        return self.readout(states), None

    def training_loss(self, batch: IrregularBatch) -> Tensor:
        pred, _ = self.predict(batch)
        if self.score_on == "observed":
            # Points up to a series' first observation follow the zero state: nothing to
            # predict them from.
            seen = batch.context.cumsum(1)
            scored = (batch.context | batch.interp) & (seen > 0) & ~(batch.context & (seen == 1))
        else:
            scored = batch.extrap if self.score_on == "future" else batch.target
        return masked_mse(pred, batch.values, scored)[0]

    def training_step(self, batch: IrregularBatch, batch_idx: int) -> Tensor:
        loss = self.training_loss(batch)
        if writes_logs_now(self.trainer):
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

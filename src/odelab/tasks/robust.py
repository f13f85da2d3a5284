"""Image classification with robustness: training recipes, a steady-state penalty, attacked
test rows."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from odelab.attacks import Attack
from odelab.errors import ConfigError
from odelab.tasks.classification import ImageClassifier

# The noisy validation images' own seed, apart from the test attacks' (seed 0 in conf/attack).
VAL_NOISE_SEED = 12345


class RobustClassifier(ImageClassifier):
    """`ImageClassifier` that can train on perturbed inputs and tests under attacks.

    Training recipe: with `training_perturbation` set, that fraction of each training
    batch is replaced by its perturbed copy (Gaussian-noise augmentation, or FGSM/PGD
    adversarial examples made against the current weights). If the net has a
    `regularization()` term (TisODE's steady-state penalty), `regularization_weight`
    times it is added to the training loss and logged as `train/regularization`. With
    `warmup_epochs`, the perturbation's strength (PGD: radius and step size) rises
    linearly from zero over that many epochs, step by step, then stays at its value;
    each epoch logs the strength it ended at as `train/perturbation_strength`.

    Selection: with `val_noise_sigma` set, each validation epoch also scores the validation
    images under Gaussian noise of that sigma (0-255 scale), the same draws every epoch, as
    `val/acc_noisy`: the metric to select a checkpoint on for robustness, where Yan et al.'s
    scripts kept the best test accuracy (`callbacks.model_checkpoint.monitor=val/acc_noisy`).

    Testing: besides the clean `test/acc`, every attack in `attacks` logs
    `test/acc/<attack name>` (e.g. `test/acc/fgsm_0.3`), one row per attack and strength.

    Args:
        net: maps images in [0, 1] to logits.
        training_perturbation: attack or noise applied to training inputs; None = clean.
        perturbed_fraction: share of each training batch that is perturbed (0..1).
        warmup_epochs: epochs over which the perturbation's strength ramps up (0: none).
        regularization_weight: weight of the net's regularization term.
        attacks: evaluation attacks keyed by name (`attack=` config group).
        val_noise_sigma: Gaussian sigma of the noisy validation score (None: not scored).
        num_classes, label_smoothing, optimizer, scheduler, scheduler_interval:
            as in `ImageClassifier`.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        training_perturbation: Attack | None = None,
        perturbed_fraction: float = 0.0,
        warmup_epochs: float = 0.0,
        regularization_weight: float = 0.0,
        attacks: dict[str, Attack] | None = None,
        val_noise_sigma: float | None = None,
        **optim: object,
    ):
        super().__init__(net, num_classes, label_smoothing, **optim)
        if not 0.0 <= perturbed_fraction <= 1.0:
            raise ConfigError(f"recipe.fraction must be in [0, 1], got {perturbed_fraction}")
        if regularization_weight < 0:
            raise ConfigError(
                f"model.regularization_weight must be >= 0, got {regularization_weight}"
            )
        if warmup_epochs < 0:
            raise ConfigError(f"recipe.warmup_epochs must be >= 0, got {warmup_epochs}")
        self.training_perturbation = training_perturbation
        self.warmup_epochs = warmup_epochs
        self.perturbed_fraction = perturbed_fraction if training_perturbation is not None else 0.0
        self.regularization_weight = regularization_weight
        self.attacks = dict(attacks or {})
        if val_noise_sigma is not None and val_noise_sigma <= 0:
            raise ConfigError(
                f"model.val_noise_sigma must be > 0 (or null for no noisy validation), "
                f"got {val_noise_sigma}"
            )
        self.val_noise_sigma = val_noise_sigma
        self._val_noise: torch.Generator | None = None

    def setup(self, stage: str) -> None:
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        expected = getattr(datamodule, "image_shape", None)
        first_conv = next((m for m in self.net.modules() if isinstance(m, nn.Conv2d)), None)
        if (
            expected is not None
            and first_conv is not None
            and first_conv.in_channels != expected[0]
        ):
            raise ConfigError(
                f"the data has {expected[0]} channel(s) but the net takes "
                f"{first_conv.in_channels}: "
                f"set model.net.in_channels={expected[0]} (and model.net.mean/std to "
                f"{expected[0]} values)"
            )

    # The training perturbation's private random stream (PGD's random starts) goes into
    # every checkpoint, so a resumed run draws the starts the uninterrupted one would have.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        generator = self._perturbation_generator()
        if generator is not None:
            checkpoint["training_perturbation_rng"] = generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        generator = self._perturbation_generator()
        state = checkpoint.get("training_perturbation_rng")
        if generator is not None and state is not None:
            generator.set_state(state)

    def _perturbation_generator(self) -> torch.Generator | None:
        if self.training_perturbation is None:
            return None
        return self.training_perturbation.generator()

    def strength_factor(self, step: int, steps_per_epoch: int) -> float:
        """The share of the perturbation's strength used at training step `step` (from 0):
        (step + 1) / (warmup_epochs * steps_per_epoch), at most 1."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, (step + 1) / (self.warmup_epochs * max(steps_per_epoch, 1)))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        n = round(self.perturbed_fraction * len(x))
        if n > 0:
            assert self.training_perturbation is not None
            perturbation = self.training_perturbation
            if self.warmup_epochs > 0:
                steps = int(self.trainer.num_training_batches)
                # Counted in batches (not optimizer steps, which gradient accumulation
                # makes fewer), so the ramp spans `warmup_epochs` epochs whatever the setup.
                factor = self.strength_factor(self.current_epoch * steps + batch_idx, steps)
                perturbation = perturbation.scaled(factor)
                self.log(
                    "train/perturbation_strength",
                    perturbation.strength,
                    on_step=False,
                    on_epoch=True,
                    reduce_fx="max",
                )
            x = x.clone()
            x[:n] = perturbation(self.net, x[:n], y[:n])
        return self._shared_step((x, y), "train")

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        loss = super()._shared_step(batch, stage)
        penalty = getattr(self.net, "regularization", lambda: None)()
        if stage == "train" and penalty is not None and self.regularization_weight > 0:
            self.log("train/regularization", penalty, on_step=False, on_epoch=True)
            loss = loss + self.regularization_weight * penalty
        return loss

    def on_validation_epoch_start(self) -> None:
        # Fresh generator each epoch: every epoch scores the same noisy images, so the
        # selection compares checkpoints, not noise draws.
        if self.val_noise_sigma is not None:
            self._val_noise = torch.Generator().manual_seed(VAL_NOISE_SEED)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self._val_noise is None:
            return
        x, y = batch
        noise = torch.randn(x.shape, generator=self._val_noise).to(x)
        x_noisy = (x + noise * (self.val_noise_sigma / 255.0)).clamp(0.0, 1.0)
        with torch.no_grad():
            correct = (self.net(x_noisy).argmax(dim=1) == y).float().mean()
        self.log("val/acc_noisy", correct, on_step=False, on_epoch=True, batch_size=len(y))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        x, y = batch
        for name, attack in self.attacks.items():
            x_attacked = attack(self.net, x, y)
            correct = (self.net(x_attacked).argmax(dim=1) == y).float().mean()
            self.log(f"test/acc/{name}", correct, on_step=False, on_epoch=True, batch_size=len(y))
            if name.startswith("gaussian") and hasattr(self.net, "stem"):
                # The feature perturbation Yan et al. credit: ||z0(x+n) - z0(x)|| / ||z0(x)||
                # at the ODE block's input (the stem's output), mean over the batch.
                with torch.no_grad():
                    z0 = self.net.stem(self.net.normalize(x)).flatten(1)
                    zn = self.net.stem(self.net.normalize(x_attacked)).flatten(1)
                    ratio = ((zn - z0).norm(dim=1) / z0.norm(dim=1).clamp_min(1e-12)).mean()
                self.log(
                    f"test/feature_perturbation/{name}",
                    ratio,
                    on_step=False,
                    on_epoch=True,
                    batch_size=len(y),
                )

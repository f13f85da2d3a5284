"""Optimizer factories that configs bind with `_partial_: true`, and a step-decay scheduler."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import SGD

from odelab.errors import ConfigError


def linear_scaled_sgd(
    params: Iterable[Tensor],
    lr: float = 0.1,
    batch_size: int = 128,
    base_batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> SGD:
    """SGD whose learning rate follows the batch size: `lr` at `base_batch_size`, scaled linearly.

    This is the rule of the reference ODE-Net recipe (lr 0.1 at batch 128), so
    changing `data.batch_size` keeps the recipe without retuning the rate.
    """
    if lr <= 0 or batch_size < 1 or base_batch_size < 1:
        raise ConfigError(
            "model.optimizer.lr must be > 0 and model.optimizer.batch_size / "
            f"base_batch_size >= 1, got {lr}, {batch_size}, {base_batch_size}"
        )
    scaled = lr * batch_size / base_batch_size
    return SGD(params, lr=scaled, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


class StepDecayToFloor(torch.optim.lr_scheduler.LambdaLR):
    """Learning rate times `rate` per step, never below `floor` times the initial rate.

    The reference's `utils.update_learning_rate` (decay 0.999, lowest lr / 10), applied
    before each step there: the first step already uses `rate` times the initial rate.

    Args:
        optimizer: the optimizer (its initial learning rates are the base).
        rate: factor per step.
        floor: smallest factor.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rate: float = 0.999, floor: float = 0.1):
        if not 0 < rate <= 1:
            raise ConfigError(f"model.scheduler.rate must be in (0, 1], got {rate}")
        if not 0 <= floor <= 1:
            raise ConfigError(f"model.scheduler.floor must be in [0, 1], got {floor}")
        self.rate, self.floor = rate, floor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        return max(self.rate ** (step + 1), self.floor)

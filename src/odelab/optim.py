"""Optimizer factories that configs bind with `_partial_: true`."""

from __future__ import annotations

from collections.abc import Iterable

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

"""What every odelab LightningModule shares: optimizer wiring and figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
from matplotlib.figure import Figure
from torch.optim import Optimizer


class OdelabTask(L.LightningModule):
    """Builds the optimizer and scheduler from Hydra partials.

    Args:
        optimizer: `torch.optim` class with its arguments bound (`_partial_: true`).
        scheduler: optional scheduler with its arguments bound; stepped each
            `scheduler_interval` ("epoch" or "step").
    """

    def __init__(
        self,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def figures(self) -> dict[str, Figure]:
        """Figures that describe the trained model; saved and logged at the end of a run."""
        return {}

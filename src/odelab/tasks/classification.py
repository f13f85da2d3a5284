"""Image classification shared by every classifier (ODE-Net, ResNet, RK-Net, MLP, CNN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from odelab.checks import check_args, fraction, integer
from odelab.tasks.base import OdelabTask

STAGES = ("train", "val", "test")


class ImageClassifier(OdelabTask):
    """Cross-entropy training of `net` with accuracy and error per stage.

    Logs `<stage>/loss`, `<stage>/acc`, `<stage>/error` (= 1 - acc) per epoch and
    `model/params`, the trainable parameter count.

    Args:
        net: maps images in [0, 1] to logits (normalisation lives inside the net).
        num_classes: number of classes.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self, net: nn.Module, num_classes: int = 10, label_smoothing: float = 0.0, **optim: object
    ):
        super().__init__(**optim)
        check_args(
            "model",
            {"num_classes": integer(2), "label_smoothing": fraction(high_open=True)},
            {"num_classes": num_classes, "label_smoothing": label_smoothing},
        )
        self.net = net
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # One metric per stage ("train" would clash with nn.Module.train as a ModuleDict key).
        for stage in STAGES:
            setattr(self, f"{stage}_accuracy", MulticlassAccuracy(num_classes, average="micro"))
        self.num_params = sum(p.numel() for p in net.parameters() if p.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def forward_features(self, x: Tensor, y: Tensor, stage: str) -> Tensor:
        """Logits of one batch; a subclass whose net also takes the labels overrides this."""
        return self(x)

    def extra_loss(self, stage: str) -> Tensor | None:
        """A term added to the cross-entropy after `forward_features` (None: nothing added)."""
        return None

    def log_extras(self, stage: str) -> None:
        """Further per-stage metrics of the last batch (the base classifier has none)."""

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """The one step of every classifier: forward, loss (+ `extra_loss`), metrics, logs."""
        x, y = batch
        logits = self.forward_features(x, y, stage)
        loss = self.criterion(logits, y)
        extra = self.extra_loss(stage)
        if extra is not None:
            loss = loss + extra
        accuracy = getattr(self, f"{stage}_accuracy")
        accuracy.update(logits.detach(), y)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True
        )
        # A torchmetrics Metric syncs its own states across processes (sync_dist is moot).
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log_extras(stage)
        return loss

    def on_train_epoch_start(self) -> None:
        self.log("model/params", float(self.num_params), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.log("model/params", float(self.num_params), sync_dist=True)

    def _log_error(self, stage: str) -> None:
        accuracy = getattr(self, f"{stage}_accuracy")
        if accuracy.update_count:
            self.log(f"{stage}/error", 1.0 - accuracy.compute(), sync_dist=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_error("val")

    def on_test_epoch_end(self) -> None:
        self._log_error("test")

    @torch.no_grad()
    def predict_labels(self, x: Tensor) -> Tensor:
        return self(x).argmax(dim=-1)

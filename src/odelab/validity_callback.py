"""Lightning callback: the "is it an ODE?" checks (Ott et al. 2021) after every test epoch.

Add it with `+callbacks@callbacks.ode_validity=ode_validity` (conf/callbacks/ode_validity.yaml). It
records each ODE block's input on the first test batch and the first `max_batches` labelled
test batches, then at the end of the test epoch logs, for the finer settings of
`odelab.ode.validity`, `test/finer_dopri5/<metric>`, `test/finer_fixed4x/<metric>` and
`test/reconstruction_rel_err` (metrics: `state_rel_change`, `step_size`, and `acc` for
classifiers, beside `test/train_solver/acc` on the same batches).
"""

from __future__ import annotations

import contextlib
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from odelab.ode.validity import capture_inputs, evaluate, is_labelled


class ODEValidity(Callback):
    """Re-tests the trained model's ODE blocks with finer solvers after the test epoch.

    Args:
        max_batches: labelled test batches kept for the finer-solver accuracies (each is
            re-run twice, once per finer setting).
    """

    def __init__(self, max_batches: int = 4) -> None:
        self.max_batches = max_batches
        self._stack: contextlib.ExitStack | None = None
        self._inputs: dict = {}
        self._batches: list[Any] = []

    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._batches = []
        self._stack = contextlib.ExitStack()
        self._inputs = self._stack.enter_context(capture_inputs(module))

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # The hooks only need the first batch's inputs; drop them so later batches run free.
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        if len(self._batches) < self.max_batches and is_labelled(batch):
            self._batches.append((batch[0].detach(), batch[1].detach()))

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        if not self._inputs:
            return
        predict = module if self._batches else None
        with torch.inference_mode(False), torch.no_grad():
            metrics = evaluate(module, self._inputs, predict, self._batches)
        for key, value in metrics.items():
            module.log(f"test/{key}", value, sync_dist=True, batch_size=1)
        self._inputs, self._batches = {}, []

"""Gradient attacks in the L-inf ball: FGSM and PGD, differentiated through the model."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odelab.attacks.base import Attack, clip_to_ball
from odelab.errors import ConfigError


def loss_and_input_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits at `x` and the gradient of the summed cross-entropy with respect to `x`.

    The sum (not the mean) keeps each example's gradient independent of the batch size.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad


class FGSM(Attack):
    """Fast gradient sign method: one step of size epsilon along sign(grad_x loss).

    One linearisation, so a larger epsilon need not lower the accuracy (the step can
    overshoot into the right class): reports show FGSM as measured, with no monotonicity
    claim; PGD is the attack whose curve must fall.
    """

    kind = "fgsm"

    def __init__(self, eps: float):
        super().__init__(eps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        _, grad = loss_and_input_grad(model, x, y)
        return clip_to_ball(x + self.strength * grad.sign(), x, self.strength)


class PGD(Attack):
    """Projected gradient descent on the loss inside the L-inf ball (Madry et al. 2018).

    Each restart runs all `steps` from its own start and yields one candidate per example:
    its final iterate (`select="final"`) or its highest-loss iterate (`select="best_loss"`).
    An example counts as broken when some restart's candidate is misclassified; that
    candidate is returned, else the candidate with the highest loss. Intermediate iterates
    never count, so more steps can give a higher accuracy (an oscillating or masked
    attack), and every restart of every configuration draws a fresh start from a
    generator seeded by `seed` and the configuration: the check "more steps or restarts
    never raise the accuracy" is a measurement that can fail, not true by construction.

    Args:
        eps: radius of the ball on the [0, 1] pixel scale.
        step_size: step per iteration; None uses 2.5 * eps / steps.
        steps: gradient steps per restart.
        random_start: start each restart at a uniform point of the ball.
        restarts: independent runs; an example broken by any of them counts as broken.
        seed: seeds the random starts (with the configuration, see above).
        select: "final" or "best_loss", the iterate of a restart that is judged.
    """

    kind = "pgd"

    def __init__(
        self,
        eps: float,
        step_size: float | None = None,
        steps: int = 20,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        select: str = "final",
    ):
        super().__init__(eps)
        if steps < 1 or restarts < 1:
            raise ConfigError("attack.steps and attack.restarts must be >= 1")
        if step_size is not None and step_size <= 0:
            raise ConfigError(f"attack.step_size must be > 0 or null, got {step_size}")
        if select not in ("final", "best_loss"):
            raise ConfigError(f"attack.select={select!r}; choose 'final' or 'best_loss'")
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.steps, self.random_start, self.restarts = steps, random_start, restarts
        self.seed, self.select = seed, select
        self._generator: torch.Generator | None = None

    def describe(self) -> str:
        """The configuration in words, for reports."""
        start = "random start" if self.random_start else "no random start"
        return (
            f"PGD eps {self.strength:g}, {self.steps} steps of {self.step_size:.4g}, "
            f"{self.restarts} restart(s), {start}, {self.select.replace('_', '-')} iterate judged"
        )

    def generator(self) -> torch.Generator:
        """The start generator, created on first use and then advanced batch after batch."""
        if self._generator is None:
            key = f"{self.seed}|{self.strength!r}|{self.step_size!r}|{self.steps}|"
            key += f"{self.restarts}|{self.random_start}|{self.select}"
            self._generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        return self._generator

    def scaled(self, factor: float) -> PGD:
        """PGD at `factor` times the radius and the step size, the same number of steps."""
        twin = super().scaled(factor)
        assert isinstance(twin, PGD)
        twin.step_size = self.step_size * factor
        return twin

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        result = x.clone()
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
        for _ in range(self.restarts):
            # Drawn for the whole batch, so an example's start does not depend on which
            # others an earlier restart already broke.
            noise = (torch.rand(x.shape, generator=self.generator()) * 2 - 1).to(x)
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            start = x[idx] + self.strength * noise[idx] if self.random_start else x[idx]
            start = clip_to_ball(start, x[idx], self.strength)
            candidate, loss, fooled = self._run(model, start, x[idx], y[idx])
            take = fooled | (loss > best_loss[idx])
            result[idx[take]], best_loss[idx[take]] = candidate[take], loss[take]
            broken[idx[fooled]] = True
        return result

    def _run(
        self, model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One restart: (candidate per example, its loss, whether it is misclassified)."""
        best, best_loss, best_fooled = x_adv, None, None
        for step in range(self.steps + 1):
            if step < self.steps:
                logits, grad = loss_and_input_grad(model, x_adv, y)
            else:
                with torch.no_grad():
                    logits = model(x_adv).detach()
            loss = F.cross_entropy(logits, y, reduction="none")
            fooled = logits.argmax(dim=1) != y
            if self.select == "best_loss" or step == self.steps:
                if best_loss is None or self.select == "final":
                    best, best_loss, best_fooled = x_adv, loss, fooled
                else:
                    better = loss > best_loss
                    best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
                    best_loss = torch.where(better, loss, best_loss)
                    best_fooled = torch.where(better, fooled, best_fooled)
            if step < self.steps:
                x_adv = clip_to_ball(x_adv + self.step_size * grad.sign(), x, self.strength)
        return best, best_loss, best_fooled

"""Gradient attacks in the L-inf ball: FGSM and PGD, differentiated through the model."""

from __future__ import annotations

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
    """Fast gradient sign method: one step of size epsilon along sign(grad_x loss)."""

    kind = "fgsm"

    def __init__(self, eps: float):
        super().__init__(eps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        _, grad = loss_and_input_grad(model, x, y)
        return clip_to_ball(x + self.strength * grad.sign(), x, self.strength)


class PGD(Attack):
    """Projected gradient descent on the loss inside the L-inf ball (Madry et al. 2018).

    An example counts as broken as soon as any iterate of any restart is misclassified,
    and that iterate is returned; otherwise the final iterate of the restart with the
    highest loss. Restart r draws the same start for an example whatever the number
    of restarts, so more steps or restarts can only lower the accuracy.

    Args:
        eps: radius of the ball on the [0, 1] pixel scale.
        step_size: step per iteration; None uses 2.5 * eps / steps.
        steps: gradient steps per restart.
        random_start: start each restart at a uniform point of the ball.
        restarts: independent runs; the worst case per example is kept.
        seed: seeds the random starts.
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
    ):
        super().__init__(eps)
        if steps < 1 or restarts < 1:
            raise ConfigError("attack.steps and attack.restarts must be >= 1")
        if step_size is not None and step_size <= 0:
            raise ConfigError(f"attack.step_size must be > 0 or null, got {step_size}")
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.steps, self.random_start, self.restarts, self.seed = (
            steps,
            random_start,
            restarts,
            seed,
        )

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        eps = self.strength
        result = x.clone()
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.restarts):
            # Drawn for the whole batch every restart so each example's start is fixed.
            noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x) * eps
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_adv = clip_to_ball(x[idx] + noise[idx], x[idx], eps) if self.random_start else x[idx]
            x_adv, idx, loss = self._run(model, x_adv, x, y, idx, result, broken)
            better = loss > best_loss[idx]
            result[idx[better]], best_loss[idx[better]] = x_adv[better], loss[better]
        return result

    def _run(
        self,
        model: nn.Module,
        x_adv: Tensor,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        result: Tensor,
        broken: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One restart; writes broken examples into `result`/`broken`, returns the rest."""
        for step in range(self.steps + 1):
            if step < self.steps:
                logits, grad = loss_and_input_grad(model, x_adv, y[idx])
            else:
                with torch.no_grad():
                    logits = model(x_adv)
            fooled = logits.argmax(dim=1) != y[idx]
            result[idx[fooled]], broken[idx[fooled]] = x_adv[fooled], True
            keep = ~fooled
            x_adv, idx, logits = x_adv[keep], idx[keep], logits[keep]
            if step == self.steps or idx.numel() == 0:
                break
            x_adv = clip_to_ball(x_adv + self.step_size * grad[keep].sign(), x[idx], self.strength)
        loss = F.cross_entropy(logits, y[idx], reduction="none")
        return x_adv, idx, loss

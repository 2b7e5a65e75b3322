"""BIM, the iterative sign-gradient attack of the DDC-AT evaluation."""

from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack


class BIM(Attack):
    """Basic Iterative Method (Kurakin et al., "Adversarial examples in the physical world", 2017), L-inf.

    ``x <- clip_{[x0-eps, x0+eps] ∩ [0,1]}(x + alpha * sign(grad_x CE))`` for ``steps`` iterations from the
    clean image, CE over non-ignored pixels. Defaults are the DDC-AT test protocol: 2 steps, eps 0.03,
    alpha 0.01 in [0, 1] pixel units (0.03*255 and 0.01*255 on 0-255 images). DDC-AT's training attack
    is 3 steps of eps/3. ``random_start`` starts from a uniform point of the eps-ball (torch's global
    RNG), which makes it PGD (Madry et al. 2018).

    Args:
        model: segmentation model (logits in eval mode).
        eps: L-inf radius in [0, 1] units.
        steps: number of iterations.
        alpha: step size in [0, 1] units.
        ignore_index: label ignored by the loss.
        random_start: start from ``x0 + U(-eps, eps)`` clipped to [0, 1].
        kwargs: see :class:`attack.base.Attack` (mean, std, forward).
    """

    name = "bim"
    fields = frozenset({"eps", "steps", "alpha", "random_start"})
    iterative = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.03,
        steps: int = 2,
        alpha: float = 0.01,
        ignore_index: int = 255,
        random_start: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        if steps < 1 or alpha < 0 or (alpha == 0 and eps > 0):
            raise ValueError(
                f"BIM needs steps >= 1 and alpha > 0 (0 only with eps 0), got steps={steps}, alpha={alpha}"
            )
        self.steps = steps
        self.alpha = alpha
        self.random_start = random_start

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = x0.clone()
        if self.random_start:
            x = (x + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp_(0.0, 1.0)
        for _ in range(self.steps):
            x.requires_grad_(True)
            loss = self.ce_loss(self.logits(x, target.shape[-2:]), target)
            grad = self.input_grad(loss, x)
            x = self.project(x.detach() + self.alpha * grad.sign(), x0)
        return x

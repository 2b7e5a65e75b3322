"""TRADES' inner maximisation: the example that maximises KL(p(clean) || p(adversarial)) per valid pixel."""

from __future__ import annotations

import torch
from torch import nn

from attack.pgd import PGD


def pixel_kl(log_q: torch.Tensor, p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per pixel (summed over classes), summed over the valid pixels."""
    return ((p * (p.clamp_min(1e-12).log() - log_q)).sum(1) * valid).sum()


class TRADESAttack(PGD):
    """The adversarial example of TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness
    and Accuracy", ICML 2019), per pixel as the segmentation variants use it.

    PGD's loop (last iterate) on KL(p(x) || p(x')) summed over the valid pixels, the clean distribution p(x)
    computed once in eval mode. Without ``random_start`` the search starts, as TRADES' code does, from
    ``x + 0.001 * N(0, 1)`` clipped to [0, 1]; with it, from PGD's random point of the ball. A training attack
    (defense/trades.py), not one of the evaluation suite's.

    Args:
        model: segmentation model (logits in eval mode).
        eps: radius of the ball in [0, 1] pixel units (L2: per image).
        steps: ascent steps.
        alpha: step size in [0, 1] pixel units.
        norm: "linf" (sign steps) or "l2" (normalised steps).
        random_start: start at a random point of the ball instead of TRADES' small Gaussian.
        ignore_index: label of pixels left out of the KL.
        kwargs: see :class:`attack.base.Attack` (mean, std).
    """

    name = ""  # a training attack: not registered for the evaluation suite

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.03,
        steps: int = 3,
        alpha: float | None = None,
        norm: str = "linf",
        random_start: bool = False,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        alpha = alpha if alpha is not None else eps / steps
        super().__init__(
            model,
            eps,
            steps=steps,
            alpha=alpha,
            norm=norm,
            random_start=random_start,
            last_iterate=True,
            ignore_index=ignore_index,
            **kwargs,
        )
        self.clean: torch.Tensor | None = None  # the normalized clean batch of the current call
        self.p_clean: torch.Tensor | None = None

    def start(self, x0: torch.Tensor) -> torch.Tensor:
        if self.random_start:
            return super().start(x0)
        return (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        return pixel_kl(logits.log_softmax(1), self.p_clean, target != self.ignore_index)

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.p_clean = self.forward(self.clean).softmax(1)
        try:
            return super().perturb(x0, target)
        finally:
            self.p_clean = None

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.clean = x.detach()
        try:
            return super().__call__(x, target)
        finally:
            self.clean = None

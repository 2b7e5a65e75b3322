"""PAdam: PGD whose step is Adam's (AMSGrad) instead of the gradient's sign."""

from __future__ import annotations

import torch
from torch import nn

from attack.apgd import pixel_losses
from attack.pgd import PGD, label_cosine

PADAM_LOSSES = ("ce", "cosine")


class PAdam(PGD):
    """Projected Adam (Halmosi, Mohos & Jelasity, "Evaluating the Adversarial Robustness of Semantic
    Segmentation: Trying Harder Pays Off", ECCV 2024), L-inf.

    Gradient ascent on the perturbation with Adam's AMSGrad update (beta 0.9 / 0.999, epsilon 1e-8,
    learning rate ``alpha``), projected onto the eps-ball and [0, 1] after every step, from a random
    start; the Adam state starts afresh for each restart. Losses: ``ce`` (pixel cross-entropy) or
    ``cosine`` (-cos(softmax(z), onehot(y)) per pixel); both summed over the non-ignored pixels of an
    image and divided by its pixel count (Adam is invariant to the scale). As :class:`attack.pgd.PGD`,
    returns per image the iterate with the lowest pixel accuracy (the paper returns the last one).
    Defaults: eps 8/255, 200 steps, alpha (learning rate) 2/255, CE, one restart, random start.
    """

    name = "padam"
    fields = frozenset({"eps", "steps", "alpha", "loss", "restarts", "random_start"})

    betas = (0.9, 0.999)
    adam_eps = 1e-8

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 200,
        alpha: float = 2 / 255,
        loss: str = "ce",
        **kwargs,
    ) -> None:
        super().__init__(model, eps, steps, alpha=alpha, norm="linf", **kwargs)
        if loss not in PADAM_LOSSES:
            raise ValueError(f"loss must be one of {PADAM_LOSSES}, got {loss!r}")
        if alpha <= 0:
            raise ValueError(f"alpha (the learning rate) must be > 0, got {alpha}")
        self.loss_name = loss
        self._moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None

    def loss(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        if self.loss_name == "cosine":
            hw = target.shape[-2] * target.shape[-1]
            return -label_cosine(logits, target, self.ignore_index).sum() / hw
        return pixel_losses("ce", logits, target, self.ignore_index).sum()

    def start(self, x0: torch.Tensor) -> torch.Tensor:
        self._moments = None  # a new run: no Adam history
        return super().start(x0)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """One AMSGrad direction m_hat / (sqrt(max_t v_hat) + epsilon); the step is alpha times it."""
        b1, b2 = self.betas
        if self._moments is None:
            zero = torch.zeros_like(grad)
            self._moments = (zero, zero, zero, 0)
        m, v, v_max, t = self._moments
        t += 1
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        v_max = torch.maximum(v_max, v)
        self._moments = (m, v, v_max, t)
        return (m / (1 - b1**t)) / ((v_max / (1 - b2**t)).sqrt() + self.adam_eps)

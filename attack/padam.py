"""PAdam: PGD whose step is Adam's (AMSGrad) instead of the gradient's sign."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.apgd import pixel_losses
from attack.pgd import PGD, label_cosine

PADAM_LOSSES = ("ce", "cosine")


class PAdam(PGD):
    """Projected Adam (Halmosi, Mohos & Jelasity, "Evaluating the Adversarial Robustness of Semantic
    Segmentation: Trying Harder Pays Off", ECCV 2024), L-inf.

    :class:`PGD` whose step is Adam's AMSGrad update (beta 0.9 / 0.999, epsilon 1e-8, learning rate
    ``alpha``), its state fresh for each restart. Losses: ``ce`` or ``cosine`` (-cos(softmax(z), onehot(y))
    per pixel), each summed over an image's non-ignored pixels over its pixel count. Returns per image the
    lowest-accuracy iterate (the paper returns the last one).
    """

    name = "padam"
    defaults = MappingProxyType(
        {
            "eps": PGD.defaults["eps"],
            "steps": 200,
            "alpha": 2 / 255,
            "loss": "ce",
            "restarts": PGD.defaults["restarts"],
            "random_start": PGD.defaults["random_start"],
        }
    )

    betas = (0.9, 0.999)
    adam_eps = 1e-8

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        alpha: float = defaults["alpha"],
        loss: str = defaults["loss"],
        **kwargs,
    ) -> None:
        super().__init__(model, eps, steps, alpha=alpha, norm="linf", **kwargs)
        PAdam.validate(loss=loss, alpha=alpha)  # PGD's values are checked by its constructor
        self.loss_name = loss
        self._moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None

    @classmethod
    def validate(cls, **values: Any) -> None:
        v = {**cls.defaults, **values}
        PGD.validate(**{**v, "norm": "linf"})
        if v["loss"] not in PADAM_LOSSES:
            raise ValueError(f"loss must be one of {PADAM_LOSSES}, got {v['loss']!r}")
        if v["alpha"] <= 0:
            raise ValueError(f"alpha (the learning rate) must be > 0, got {v['alpha']}")

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

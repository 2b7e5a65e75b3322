"""FGSM, the one-step sign-gradient attack."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn

from attack.bim import BIM


class FGSM(BIM):
    """Fast gradient sign method (Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
    ICLR 2015): one step of size eps along sign(grad_x CE) from the clean image."""

    name = "fgsm"
    defaults = MappingProxyType({"eps": 8 / 255})
    iterative = False

    def __init__(self, model: nn.Module, eps: float = defaults["eps"], ignore_index: int = 255, **kwargs) -> None:
        super().__init__(model, eps=eps, steps=1, alpha=eps, ignore_index=ignore_index, **kwargs)

    @classmethod
    def validate(cls, **values: Any) -> None:
        eps = {**cls.defaults, **values}["eps"]
        BIM.validate(eps=eps, steps=1, alpha=eps)

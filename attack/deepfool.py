"""DeepFool for segmentation: linearise every still-correct pixel's nearest class boundary at once."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.base import MinNormAttack, label_margin


class DeepFool(MinNormAttack):
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
    neural networks", CVPR 2016) for segmentation, L2 or L-inf.

    Per pixel p still predicted as its label (the active set A) the nearest boundary is taken as the
    runner-up class k_p, f_p = z_{k_p} - z_{y_p} < 0 (the linearised nearest when the classes' gradients have
    equal norms; ranking every class needs a backward pass each). Each iteration takes DeepFool's step for
    G = sum_{p in A} |f_p| * f_p (weights detached), r = |G| / ||grad G||_2^2 * grad G (L-inf:
    |G| / ||grad G||_1 * sign(grad G)): with orthogonal active gradients of equal norm it moves every pixel
    onto its own linearised boundary. x = clip_[0,1](x0 + (1 + overshoot) * sum r), until A is empty or after
    ``steps``. Minimum-norm in ``norm``: eps inf returns the unclipped result.
    """

    name = "deepfool"
    defaults = MappingProxyType({"eps": float("inf"), "steps": 50, "overshoot": 0.02, "norm": "l2"})

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        overshoot: float = defaults["overshoot"],
        norm: str = defaults["norm"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        DeepFool.validate(eps=eps, steps=steps, overshoot=overshoot, norm=norm)
        self.norm = norm
        self.steps = steps
        self.overshoot = overshoot

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, **values}
        if v["steps"] < 1 or v["overshoot"] < 0:
            raise ValueError(f"DeepFool needs steps >= 1 and overshoot >= 0, got {v['steps']}, {v['overshoot']}")

    def step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The smallest step r with gap + <grad, r> = 0 per image, for per-image ``gap`` (N,) <= 0."""
        flat = grad.flatten(1)
        shape = (-1, 1, 1, 1)
        if self.norm == "l2":
            return (gap.abs() / flat.pow(2).sum(1).clamp_min(1e-12)).view(shape) * grad
        return (gap.abs() / flat.abs().sum(1).clamp_min(1e-12)).view(shape) * grad.sign()

    def minimize(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        total = torch.zeros_like(x0)
        x = x0.clone()
        for _ in range(self.steps):
            x.requires_grad_(True)
            logits = self.logits(x, size)
            active = self.still_correct(logits, target)
            if not active.any():
                break
            f = -label_margin(logits, target, self.ignore_index)[0] * active  # <= 0 on A, 0 elsewhere
            weighted = (f.detach().abs() * f).flatten(1).sum(1)
            grad = self.input_grad(weighted.sum(), x)
            total += self.step(weighted.detach(), grad)
            x = (x0 + (1 + self.overshoot) * total).clamp(0.0, 1.0)
        return x.detach()

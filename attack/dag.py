"""DAG, dense adversary generation: push every still-correct pixel towards its own adversarial label."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.base import MinNormAttack, label_margin


class DAG(MinNormAttack):
    """Dense Adversary Generation (Xie et al., "Adversarial Examples for Semantic Segmentation and Object
    Detection", ICCV 2017), untargeted form.

    Each pixel's adversarial label l'_p is the runner-up class of the clean logits; while non-ignored pixels
    are still predicted as their label (the active set T), x <- clip_[0,1](x + gamma * g / ||g||_inf) with
    g = grad_x sum_{p in T} (z_{l'_p, p} - z_{l_p, p}), at most ``steps`` times. The paper's gamma 0.5 on
    0-255 pixels is 0.5/255 here. Minimum-norm in L-inf: eps inf returns the unclipped result.
    """

    name = "dag"
    defaults = MappingProxyType({"eps": float("inf"), "steps": 200, "gamma": 0.5 / 255})

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        gamma: float = defaults["gamma"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        DAG.validate(eps=eps, steps=steps, gamma=gamma)
        self.steps = steps
        self.gamma = gamma

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, **values}
        if v["steps"] < 1 or v["gamma"] <= 0:
            raise ValueError(f"DAG needs steps >= 1 and gamma > 0, got steps={v['steps']}, gamma={v['gamma']}")

    def minimize(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        valid = target != self.ignore_index
        with torch.no_grad():
            adversarial = label_margin(self.logits(x0, size), target, self.ignore_index)[1]
        safe, adversarial = torch.where(valid, target, 0), torch.where(valid, adversarial, 0)
        x = x0.clone()
        for _ in range(self.steps):
            x.requires_grad_(True)
            logits = self.logits(x, size)
            active = self.still_correct(logits, target)
            if not active.any():
                break
            gap = logits.gather(1, adversarial[:, None])[:, 0] - logits.gather(1, safe[:, None])[:, 0]
            grad = self.input_grad((gap * active).sum(), x)
            scale = grad.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x = (x.detach() + self.gamma * grad / scale).clamp_(0.0, 1.0)
        return x.detach()

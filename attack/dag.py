"""DAG, dense adversary generation: push every still-correct pixel towards its own adversarial label."""

from __future__ import annotations

import torch
from torch import nn

from attack.base import MinNormAttack, label_margin


class DAG(MinNormAttack):
    """Dense Adversary Generation (Xie et al., "Adversarial Examples for Semantic Segmentation and Object
    Detection", ICCV 2017), untargeted form.

    Each pixel gets a fixed adversarial label l'_p: the runner-up class of the clean logits (the highest
    class other than its label). At iteration n the active set T_n holds the non-ignored pixels still
    predicted as their label; g = grad_x sum_{p in T_n} (z_{l'_p, p} - z_{l_p, p}) and
    x <- clip_[0,1](x + gamma * g / ||g||_inf) per image. An image stops when its active set is empty,
    all stop after ``steps`` iterations. The paper's gamma 0.5 on 0-255 pixels is 0.5/255 here (every
    step moves the most-changed pixel by half a grey level). Minimum-norm attack in L-inf: eps = inf
    (default) returns the unclipped result, a finite eps its projection onto the L-inf ball.
    Defaults: gamma 0.5/255, 200 iterations (the paper's maximum for segmentation), eps inf.
    """

    name = "dag"
    fields = frozenset({"eps", "steps", "gamma"})
    iterative = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = float("inf"),
        steps: int = 200,
        gamma: float = 0.5 / 255,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        if steps < 1 or gamma <= 0:
            raise ValueError(f"DAG needs steps >= 1 and gamma > 0, got steps={steps}, gamma={gamma}")
        self.steps = steps
        self.gamma = gamma

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

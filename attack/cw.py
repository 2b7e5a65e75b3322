"""Carlini-Wagner L2 for segmentation: per-pixel margin loss, Adam in tanh space, binary search over c."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.base import MinNormAttack, label_margin


def margin_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, kappa: float = 0.0) -> torch.Tensor:
    """Per image (N,): sum over non-ignored pixels of max(z_y - max_{j != y} z_j, -kappa), divided by H * W
    (so that c does not depend on the crop size)."""
    margin = label_margin(logits, target, ignore_index)[0].clamp_min(-kappa) * (target != ignore_index)
    return margin.flatten(1).sum(1) / (target.shape[-2] * target.shape[-1])


class CW(MinNormAttack):
    """Carlini & Wagner L2 ("Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017) for
    segmentation.

    Adam (learning rate ``lr``) in tanh space minimises ||x - x0||_2^2 + c * :func:`margin_loss` per image;
    a binary search over c per image (``search_steps`` rounds from ``c``: tenfold until the first success,
    then bisection) keeps the smallest-L2 iterate whose pixel accuracy is at most ``success_acc`` (else the
    lowest-accuracy one). Minimum-norm in L2: eps inf returns the unclipped result.
    """

    name = "cw"
    defaults = MappingProxyType(
        {"eps": float("inf"), "steps": 100, "search_steps": 5, "c": 1.0, "lr": 0.01, "kappa": 0.0, "success_acc": 0.1}
    )

    norm = "l2"

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        search_steps: int = defaults["search_steps"],
        c: float = defaults["c"],
        lr: float = defaults["lr"],
        kappa: float = defaults["kappa"],
        success_acc: float = defaults["success_acc"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        CW.validate(eps=eps, steps=steps, search_steps=search_steps, c=c, lr=lr, kappa=kappa, success_acc=success_acc)
        self.steps = steps
        self.search_steps = search_steps
        self.c = c
        self.lr = lr
        self.kappa = kappa
        self.success_acc = success_acc

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, **values}
        if v["steps"] < 1 or v["search_steps"] < 1:
            raise ValueError(f"C&W needs steps >= 1 and search_steps >= 1, got {v['steps']}, {v['search_steps']}")
        c, lr, kappa, success_acc = v["c"], v["lr"], v["kappa"], v["success_acc"]
        if c <= 0 or lr <= 0 or kappa < 0 or not 0 <= success_acc <= 1:
            raise ValueError(
                f"C&W needs c > 0, lr > 0, kappa >= 0 and 0 <= success_acc <= 1, got c={c}, "
                f"lr={lr}, kappa={kappa}, success_acc={success_acc}"
            )

    def minimize(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size, n = target.shape[-2:], x0.shape[0]
        w0 = torch.atanh((2 * x0 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), float(self.c), device=x0.device)
        lower, upper = torch.zeros_like(c), torch.full_like(c, float("inf"))
        best = x0.clone()
        best_norm = torch.full_like(c, float("inf"))  # of successful iterates
        best_acc = torch.full_like(c, float("inf"))  # lowest accuracy, for images not yet successful
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x0.device)
            for _ in range(self.steps):
                x = (torch.tanh(w) + 1) / 2
                logits = self.logits(x, size)
                dist = (x - x0).flatten(1).pow(2).sum(1)
                objective = (dist + c * margin_loss(logits, target, self.ignore_index, self.kappa)).sum()
                with torch.no_grad():
                    acc = self.pixel_accuracy(logits, target)
                    hit = acc <= self.success_acc
                    norm = dist.sqrt()
                    smaller = hit & (norm < best_norm)
                    lower_acc = ~hit & (best_norm == float("inf")) & (acc < best_acc)
                    keep = smaller | lower_acc
                    best[keep] = x.detach()[keep]
                    best_norm = torch.where(smaller, norm, best_norm)
                    best_acc = torch.where(keep, acc, best_acc)
                    succeeded |= hit
                w.grad = self.input_grad(objective, w)
                optimizer.step()
            upper = torch.where(succeeded, torch.minimum(upper, c), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, c))
            c = torch.where(upper < float("inf"), (lower + upper) / 2, c * 10)
        return best

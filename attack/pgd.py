"""PGD and its segmentation variants share one loop: random start, steps, best iterate per image."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import Attack, label_margin


class PGD(Attack):
    """Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018) on the pixel cross-entropy, L-inf (sign steps) or L2 (normalized steps).

    Returns per image the iterate with the lowest pixel accuracy over all steps and restarts (or the last
    iterate with ``last_iterate``).

    Args:
        model: segmentation model (logits in eval mode).
        eps: radius of the ball in [0, 1] pixel units (L2: per image).
        steps: iterations per restart.
        alpha: step size; default (None) 2.5 * eps / steps.
        norm: "linf" or "l2".
        restarts: independent runs from random starts; the best per image is kept.
        random_start: start at a random point of the ball (L2: a random direction scaled by U(0, 1) * eps);
            False: from the clean image.
        last_iterate: return the last iterate (SAM-AT's and the textbook PGD's result); one restart only.
        ignore_index: label ignored by the loss and the accuracy.
        kwargs: see :class:`attack.base.Attack` (mean, std, forward).
    """

    name = "pgd"
    defaults = MappingProxyType(
        {
            "eps": 8 / 255,
            "steps": 10,
            "alpha": None,
            "norm": "linf",
            "restarts": 1,
            "random_start": True,
            "last_iterate": False,
        }
    )
    iterative = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        alpha: float | None = defaults["alpha"],
        norm: str = defaults["norm"],
        restarts: int = defaults["restarts"],
        random_start: bool = defaults["random_start"],
        last_iterate: bool = defaults["last_iterate"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        PGD.validate(eps=eps, steps=steps, norm=norm, restarts=restarts, last_iterate=last_iterate)
        self.norm = norm
        self.steps = steps
        self.alpha = alpha if alpha is not None else 2.5 * eps / steps
        self.restarts = restarts
        self.random_start = random_start
        self.last_iterate = last_iterate

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, **values}
        if v["steps"] < 1 or v["restarts"] < 1:
            raise ValueError(f"need steps >= 1 and restarts >= 1, got {v['steps']}, {v['restarts']}")
        if v["last_iterate"] and v["restarts"] > 1:
            raise ValueError("last_iterate takes one run: set restarts 1")

    def loss(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        """The objective to ascend at ``step`` (0-based), summed over the batch."""
        return self.ce_loss(logits, target)

    def start(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x0.clone()
        if self.norm == "l2":
            direction = torch.randn_like(x0)
            norms = direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            radius = self.eps * torch.rand(x0.shape[0], 1, 1, 1, device=x0.device, dtype=x0.dtype)
            return (x0 + direction / norms * radius).clamp_(0.0, 1.0)
        return (x0 + torch.empty_like(x0).uniform_(-self.eps, self.eps)).clamp_(0.0, 1.0)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "l2":
            return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return grad.sign()

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        best = x0.clone()
        best_acc = torch.full((x0.shape[0],), float("inf"), device=x0.device)

        def keep(x: torch.Tensor, logits: torch.Tensor) -> None:
            acc = self.pixel_accuracy(logits.detach(), target)
            better = acc < best_acc
            best[better] = x.detach()[better]
            best_acc[better] = acc[better]

        for _ in range(self.restarts):
            x = self.start(x0)
            for step in range(self.steps):
                x.requires_grad_(True)
                logits = self.logits(x, size)
                if not self.last_iterate:  # scored with the forward pass its gradient needs anyway
                    keep(x, logits)
                grad = self.input_grad(self.loss(logits, target, step), x)
                x = self.project(x.detach() + self.alpha * self.ascent(grad), x0)
            if self.last_iterate:
                return x
            with torch.no_grad():
                keep(x, self.logits(x, size))
        return best


class SegPGD(PGD):
    """SegPGD (Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and
    Boosting Segmentation Robustness", ECCV 2022): :class:`PGD` on
    [(1 - l_t) * sum_{P_T} CE + l_t * sum_{P_F} CE] / (H * W), P_T / P_F the correctly / wrongly classified
    pixels at step t = 1..T, l_t = (t - 1) / (2T); ignored pixels contribute 0.
    """

    name = "segpgd"
    defaults = MappingProxyType({**PGD.defaults, "steps": 20})

    def __init__(
        self, model: nn.Module, eps: float = defaults["eps"], steps: int = defaults["steps"], **kwargs
    ) -> None:
        super().__init__(model, eps, steps, **kwargs)

    def weight(self, step: int) -> float:
        """l_t for 0-based ``step``: (t - 1) / (2T) with t = step + 1."""
        return step / (2 * self.steps)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        correct = (logits.detach().argmax(1) == target).float()
        lam = self.weight(step)
        per_pixel = ((1 - lam) * correct + lam * (1 - correct)) * ce
        return per_pixel.sum() / (target.shape[-2] * target.shape[-1])


def label_cosine(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per pixel cos(softmax(z), onehot(y)), 0 on ignored pixels (differentiable in ``logits``)."""
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).permute(0, 3, 1, 2).to(logits)
    return F.cosine_similarity(logits.softmax(1), onehot, dim=1) * valid


class CosPGD(PGD):
    """CosPGD (Agnihotri & Keuper, "CosPGD: an efficient white-box adversarial attack for pixel-wise
    prediction tasks", ICML 2024): :class:`PGD` on the mean over pixels of w * CE, w = cos(softmax(z),
    onehot(y)) detached (0 on ignored pixels).

    ``targeted``: the paper's targeted variant towards y*, per pixel the runner-up class of the clean
    logits (:func:`attack.base.label_margin`): w = 1 - cos(softmax(z), onehot(y*)), descending CE(z, y*);
    the iterate kept is still the one with the lowest accuracy on the true labels.
    """

    name = "cospgd"
    defaults = MappingProxyType({**PGD.defaults, "steps": 20, "targeted": False})

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        targeted: bool = defaults["targeted"],
        **kwargs,
    ) -> None:
        super().__init__(model, eps, steps, **kwargs)
        CosPGD.validate(targeted=targeted)  # PGD's values are checked by its constructor
        self.targeted = targeted
        self.adv_target: torch.Tensor | None = None  # y* of the current call (targeted only)

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        targeted = {**cls.defaults, **values}["targeted"]
        if not isinstance(targeted, bool):
            raise ValueError(f"targeted must be true or false, got {targeted!r}")

    def weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Untargeted: cos(softmax(z), onehot(y)); targeted (``target`` = y*): 1 - cos. 0 on ignored pixels."""
        cos = label_cosine(logits.detach(), target, self.ignore_index)
        if self.targeted:
            return (1 - cos) * (target != self.ignore_index)
        return cos

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.targeted:
            with torch.no_grad():
                self.adv_target = label_margin(self.logits(x0, target.shape[-2:]), target, self.ignore_index)[1]
        return super().perturb(x0, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        sign = 1.0
        if self.targeted:
            target, sign = self.adv_target, -1.0
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        return sign * (self.weights(logits, target) * ce).flatten(1).mean(1).sum()

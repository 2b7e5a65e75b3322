"""DeepFool for segmentation: linearise every still-correct pixel's nearest class boundary at once."""

from __future__ import annotations

import torch
from torch import nn

from attack.base import MinNormAttack, label_margin


class DeepFool(MinNormAttack):
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
    neural networks", CVPR 2016) for segmentation, L2 or L-inf.

    Per pixel p of the active set A (non-ignored pixels still predicted as their label y_p) the nearest
    class boundary is taken as the runner-up class k_p (the smallest logit gap
    f_p = z_{k_p} - z_{y_p} < 0: the linearised nearest boundary when the classes' gradients have equal
    norms; ranking by |f_k| / ||grad f_k|| per pixel and class would need one backward pass each).
    Aggregation: DeepFool's step for G = sum_{p in A} |f_p| * f_p (weights |f_p| detached), the smallest
    perturbation that zeroes G's linearisation, r = |G| / ||grad G||_2^2 * grad G (L-inf:
    |G| / ||grad G||_1 * sign(grad G)). When the active pixels' gradients are orthogonal (disjoint
    receptive fields) and of equal norm, r moves every pixel exactly onto its own linearised boundary;
    a single pixel gets the classifier's DeepFool step. The steps add up,
    x = clip_[0,1](x0 + (1 + overshoot) * sum r), until A is empty for every image or after ``steps``
    iterations. Minimum-norm attack: eps = inf (default)
    returns the unclipped result, a finite eps its projection onto the ball of ``norm``.
    Defaults: overshoot 0.02, 50 iterations (the paper's maximum), L2, eps inf.
    """

    name = "deepfool"
    fields = frozenset({"eps", "steps", "overshoot", "norm"})
    iterative = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = float("inf"),
        steps: int = 50,
        overshoot: float = 0.02,
        norm: str = "l2",
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if steps < 1 or overshoot < 0:
            raise ValueError(f"DeepFool needs steps >= 1 and overshoot >= 0, got {steps}, {overshoot}")
        self.norm = norm
        self.steps = steps
        self.overshoot = overshoot

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

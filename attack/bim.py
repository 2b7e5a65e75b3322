"""BIM, the iterative sign-gradient attack of the DDC-AT evaluation."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.base import Attack


class BIM(Attack):
    """Basic Iterative Method (Kurakin et al., "Adversarial examples in the physical world", 2017), L-inf.

    ``x <- clip_{[x0-eps, x0+eps] ∩ [0,1]}(x + alpha * sign(grad_x CE))`` from the clean image. The defaults
    are the DDC-AT test protocol (2 steps, eps 0.03, alpha 0.01); ``random_start`` makes it PGD.

    Args:
        model: segmentation model (logits in eval mode).
        eps: L-inf radius in [0, 1] units.
        steps: number of iterations.
        alpha: step size in [0, 1] units.
        ignore_index: label ignored by the loss.
        random_start: start from ``x0 + U(-eps, eps)`` clipped to [0, 1].
        keep: ``last``, the last iterate; or ``best_batch_loss``, PIR-AT's training attack (``Pgd_Attack`` of
            nmndeep/Robust-Segmentation): the iterate after the last step whose batch loss, measured before the
            step, was at least the highest so far.
        param_grads: PIR-AT's slip, for training only: each step's ``loss.backward()`` also adds the gradient of
            the batch's mean CE to the model's parameters' ``.grad``, which its training step then keeps in the
            update (its ``zero_grad`` runs before the attack). Not a config field of evaluation attacks.
        kwargs: see :class:`attack.base.Attack` (mean, std, forward).
    """

    name = "bim"
    defaults = MappingProxyType({"eps": 0.03, "steps": 2, "alpha": 0.01, "random_start": False, "keep": "last"})
    keeps = ("last", "best_batch_loss")
    iterative = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        alpha: float = defaults["alpha"],
        ignore_index: int = 255,
        random_start: bool = defaults["random_start"],
        keep: str = defaults["keep"],
        param_grads: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        BIM.validate(eps=eps, steps=steps, alpha=alpha, keep=keep)
        self.steps = steps
        self.alpha = alpha
        self.random_start = random_start
        self.keep = keep
        self.param_grads = param_grads

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, **values}
        steps, alpha = v["steps"], v["alpha"]
        if steps < 1 or alpha < 0 or (alpha == 0 and v["eps"] > 0):
            raise ValueError(
                f"BIM needs steps >= 1 and alpha > 0 (0 only with eps 0), got steps={steps}, alpha={alpha}"
            )
        if v["keep"] not in cls.keeps:
            raise ValueError(f"BIM's keep is one of {', '.join(cls.keeps)}, got {v['keep']!r}")

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = x0.clone()
        if self.random_start:
            x = (x + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp_(0.0, 1.0)
        kept, highest = x, None
        for _ in range(self.steps):
            x.requires_grad_(True)
            loss = self.ce_loss(self.logits(x, target.shape[-2:]), target)
            grad = self.input_grad(loss, x) if not self.param_grads else self._grad_and_param_grads(loss, x, target)
            x = self.project(x.detach() + self.alpha * grad.sign(), x0)
            if self.keep == "best_batch_loss":  # torch.where, not ``if``: no host sync in the loop
                improved = loss.detach() >= highest if highest is not None else torch.ones((), dtype=torch.bool)
                kept = torch.where(improved, x, kept)
                highest = loss.detach() if highest is None else torch.maximum(highest, loss.detach())
        return x if self.keep == "last" else kept

    def _grad_and_param_grads(self, loss: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d loss / d x, with the mean CE's parameter gradients accumulated into ``.grad`` (``param_grads``)."""
        valid = (target != self.ignore_index).sum().clamp_min(1)
        (loss / valid).backward()
        grad, x.grad = x.grad, None
        return grad

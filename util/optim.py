"""Optimizers of the training loop: SGD (the original's), Adam, and SAM on top of SGD.

Parameter groups follow semseg: the backbone at ``base_lr``, the heads (context module, classifiers,
aux) at 10x; the poly schedule rescales both every iteration.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class SAM:
    """Sharpness-aware minimization (Foret et al., ICLR 2021; Kwon et al., ICML 2021 when ``adaptive``).

    One update: with the gradient g at w, move to ``w + e``, ``e = rho * g / ||g||`` (adaptive:
    ``e = rho * w^2 g / ||w g||``), recompute the gradient there, return to w and step the base
    optimizer with that gradient. Used as in SAM-AT ("Sharpness-Aware Minimization Alone can Improve
    Adversarial Robustness"), alone or on top of an adversarial-training defense.

    Args:
        base: the optimizer that takes the step from w (its param groups and state are SAM's).
        rho: radius of the weight perturbation.
        adaptive: scale the perturbation by |w| (ASAM).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.02, adaptive: bool = False) -> None:
        if rho <= 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base = base
        self.rho = rho
        self.adaptive = adaptive
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, its value w) while at w + e

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def _params_with_grad(self) -> Iterator[torch.Tensor]:
        for group in self.base.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p

    @torch.no_grad()
    def ascend(self) -> bool:
        """w <- w + e(w), from the gradients in ``.grad``.

        e does not depend on the gradients' scale, so fp16's loss-scaled gradients serve as they are. Returns
        False, leaving w, when their norm is not finite (an fp16 overflow: the scaler then skips the step).
        Under DDP ``.grad`` holds the gradient averaged over processes, so e is that of the global batch.
        """
        params = list(self._params_with_grad())
        if not params:
            return False
        scaled = [(p.abs() * p.grad if self.adaptive else p.grad) for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in scaled]))
        if not torch.isfinite(norm):
            return False
        scale = self.rho / (norm + 1e-12)
        self._saved = []
        for p in params:
            self._saved.append((p, p.detach().clone()))  # restored by copy: (w + e) - e need not be w
            p.add_((p * p * p.grad if self.adaptive else p.grad) * scale)
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Return to w exactly; the gradients computed at w + e stay in ``.grad`` for the base optimizer's step."""
        for p, saved in self._saved:
            p.copy_(saved)
        self._saved = []

    def step(self) -> None:
        """A plain base-optimizer step (SAM's warm-up iterations)."""
        self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BN layers normalize with batch statistics but leave their running statistics alone (SAM's
    second forward at w + e must not count the batch twice)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum


def param_groups(model: nn.Module, base_lr: float) -> tuple[list[dict], int]:
    """semseg's groups: backbone modules at base_lr, head modules at 10x; returns (groups, index of
    the first head group)."""
    groups = [{"params": list(m.parameters()), "lr": base_lr} for m in model.backbone_modules()]
    index_split = len(groups)
    groups += [{"params": list(m.parameters()), "lr": base_lr * 10} for m in model.head_modules()]
    return groups, index_split


def build_optimizer(name: str, model: nn.Module, base_lr: float, momentum: float = 0.9,
                    weight_decay: float = 1e-4, sam_rho: float = 0.02,
                    sam_adaptive: bool = False) -> tuple[torch.optim.Optimizer | SAM, int]:
    """``sgd`` (the original), ``adam``, or ``sam`` (SAM around SGD); returns (optimizer, index of the
    first head parameter group)."""
    groups, index_split = param_groups(model, base_lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=base_lr, weight_decay=weight_decay), index_split
    sgd = torch.optim.SGD(groups, lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return sgd, index_split
    if name == "sam":
        return SAM(sgd, rho=sam_rho, adaptive=sam_adaptive), index_split
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam or sam")


def poly_lr(base_lr: float, curr_iter: int, max_iter: int, power: float = 0.9) -> float:
    """Poly learning-rate schedule."""
    return base_lr * (1 - float(curr_iter) / max_iter) ** power


def set_lr(optimizer: torch.optim.Optimizer | SAM, lr: float, index_split: int) -> None:
    """Backbone groups at ``lr``, head groups at 10x."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr if index < index_split else lr * 10

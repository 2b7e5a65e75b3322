"""Optimizers of the training loop: SGD (the original's), Adam, and SAM on top of SGD.

Parameter groups follow semseg: the backbone at ``base_lr``, the heads (context module, classifiers,
aux) at ``head_lr_mult`` x (10; VainF's and SAM-AT's recipe: 1); the poly schedule rescales both every iteration.
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

    def __init__(
        self,
        base: torch.optim.Optimizer,
        rho: float = 0.02,
        adaptive: bool = False,
        warmup: torch.optim.Optimizer | None = None,
    ) -> None:
        if rho <= 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base = base
        self.warmup = warmup  # SAM-AT's separate warm-up optimizer (None: the warm-up steps ``base``)
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

    def warmup_optimizer(self) -> torch.optim.Optimizer:
        """What SAM's warm-up iterations step: the separate warm-up optimizer, else the base optimizer."""
        return self.warmup or self.base

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state = self.base.state_dict()
        return state if self.warmup is None else {**state, "warmup": self.warmup.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        warmup = state.pop("warmup", None)
        self.base.load_state_dict(state)
        if self.warmup is not None and warmup is not None:
            self.warmup.load_state_dict(warmup)


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


def param_groups(
    model: nn.Module, base_lr: float, head_mult: float = 10.0, no_decay_1d: bool = False
) -> tuple[list[dict], int]:
    """semseg's groups: backbone modules at base_lr, head modules at ``head_mult`` x; returns (groups, index of
    the first head group). With ``no_decay_1d`` each module's parameters split in two groups as PIR-AT's
    ``group_weight`` splits them: weight decay for the others, none for 1-d ones (biases, norms, layer scale)
    and any whose name holds ``norm``."""

    def split(module: nn.Module, lr: float) -> list[dict]:
        if not no_decay_1d:
            return [{"params": list(module.parameters()), "lr": lr}]
        named = list(module.named_parameters())
        plain = [p for n, p in named if p.ndim <= 1 or "norm" in n]
        return [
            {"params": [p for n, p in named if not (p.ndim <= 1 or "norm" in n)], "lr": lr},
            {"params": plain, "lr": lr, "weight_decay": 0.0},
        ]

    groups = [g for m in model.backbone_modules() for g in split(m, base_lr)]
    index_split = len(groups)
    groups += [g for m in model.head_modules() for g in split(m, base_lr * head_mult)]
    return groups, index_split


def build_optimizer(
    name: str,
    model: nn.Module,
    base_lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    sam_rho: float = 0.02,
    sam_adaptive: bool = False,
    head_mult: float = 10.0,
    sam_warmup_separate: bool = False,
) -> tuple[torch.optim.Optimizer | SAM, int]:
    """``sgd`` (the original), ``adam``, ``adamw`` (PIR-AT's: decoupled weight decay, none for 1-d parameters),
    or ``sam`` (SAM around SGD); returns (optimizer, index of the first head parameter group)."""
    groups, index_split = param_groups(model, base_lr, head_mult, no_decay_1d=name == "adamw")
    if name == "adam":
        return torch.optim.Adam(groups, lr=base_lr, weight_decay=weight_decay), index_split
    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
        ), index_split
    sgd = torch.optim.SGD(groups, lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return sgd, index_split
    if name == "sam":
        warmup = None
        if sam_warmup_separate:  # SAM-AT: its own momentum, and set_lr never touches its rates
            warmup = torch.optim.SGD(
                [dict(g) for g in param_groups(model, base_lr, head_mult)[0]],
                lr=base_lr,
                momentum=momentum,
                weight_decay=weight_decay,
            )
        return SAM(sgd, rho=sam_rho, adaptive=sam_adaptive, warmup=warmup), index_split
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam, adamw or sam")


def poly_lr(
    base_lr: float,
    curr_iter: int,
    max_iter: int,
    power: float = 0.9,
    min_lr: float = 0.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.0,
) -> float:
    """The learning rate of update ``curr_iter`` (from 0): poly, not below ``min_lr`` (VainF's PolyLR floor); with
    ``warmup_iters``, PIR-AT's WarmupPolyLR: first a linear rise from ``warmup_ratio`` x, then poly over the
    remaining updates."""
    if curr_iter < warmup_iters:
        ratio = warmup_ratio + (1.0 - warmup_ratio) * curr_iter / warmup_iters
    else:
        ratio = (1 - float(curr_iter - warmup_iters) / (max_iter - warmup_iters)) ** power
    return max(base_lr * ratio, min_lr)


def set_lr(optimizer: torch.optim.Optimizer | SAM, lr: float, index_split: int, head_mult: float = 10.0) -> None:
    """Backbone groups at ``lr``, head groups at ``head_mult`` x."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr if index < index_split else lr * head_mult


def set_bn_momentum(modules: list[nn.Module], momentum: float) -> None:
    """The BN momentum of every BN layer in ``modules`` (VainF sets 0.01 on the backbone)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum

"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019), per
pixel as the segmentation variants apply it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from attack.trades import TRADESAttack, pixel_kl
from defense.base import DEFENSES, NoDefense, StepResult, TrainingAttack, UpdateBatch, unwrap
from util import dist


@DEFENSES.register("trades")
class TRADES(NoDefense):
    """loss = CE(clean) + aux_weight * CE_aux(clean) + beta * KL(p(clean) || p(adversarial)) per valid pixel.

    The adversarial example maximises that KL (:class:`attack.trades.TRADESAttack`, in eval mode, with the
    training attack's eps, steps, step size, norm and random start).
    """

    config_keys: ClassVar[Mapping[str, str]] = {"beta": "trades_beta"}

    def __init__(
        self, aux_weight: float = 0.4, ignore_label: int = 255, attack: TrainingAttack | None = None, beta: float = 6.0
    ) -> None:
        super().__init__(aux_weight, ignore_label, attack)
        self.beta = beta

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        target = self.resized(model, images, target)
        a = self.attack
        attack = TRADESAttack(
            unwrap(model),
            a.eps,
            steps=a.steps,
            alpha=a.alpha,
            norm=a.norm,
            random_start=a.random_start,
            ignore_index=self.ignore_label,
            mean=a.mean,
            std=a.std,
        )
        return UpdateBatch(images, target, adversarial=attack(images, target))

    def loss(self, model: nn.Module, batch: UpdateBatch) -> StepResult:
        outputs = model(batch.images)
        natural, main, aux = self.seg_loss(outputs, batch.target)
        valid = batch.target != self.ignore_label
        kl = pixel_kl(model(batch.adversarial)["out"].log_softmax(1), outputs["out"].softmax(1), valid)
        robust = dist.global_mean(kl, valid.sum())  # the mean over the global batch's valid pixels
        loss = natural + self.beta * robust
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), batch.target)

"""PGD-AT: adversarial training on every image of the batch (Madry et al., ICLR 2018), as SAM-AT's ``--adv``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from defense.base import DEFENSES, NoDefense, TrainingAttack, UpdateBatch, unwrap


@DEFENSES.register("pgd_at")
class PGDAT(NoDefense):
    """Every image of the batch replaced by its adversarial example (the first ``clean_fraction`` of the batch
    kept clean); loss = main + aux_weight * aux on that batch. SAM-AT's ``--adv`` is this with one step of
    size eps, no random start and the attack run in train mode (``adv_train_mode``)."""

    config_keys: ClassVar[Mapping[str, str]] = {"clean_fraction": "adv_clean_fraction"}

    def __init__(
        self,
        aux_weight: float = 0.4,
        ignore_label: int = 255,
        attack: TrainingAttack | None = None,
        clean_fraction: float = 0.0,
    ) -> None:
        super().__init__(aux_weight, ignore_label, attack)
        self.clean_fraction = clean_fraction

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        target = self.resized(model, images, target)
        clean = round(images.size(0) * self.clean_fraction)
        adv = self.attack.build(unwrap(model), self.ignore_label)(images[clean:], target[clean:])
        return UpdateBatch(torch.cat([images[:clean], adv]), target)

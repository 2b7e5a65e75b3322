"""SAT: standard adversarial training as DDC-AT's code runs it."""

from __future__ import annotations

import torch
from torch import nn

from defense.base import DEFENSES, NoDefense, UpdateBatch, unwrap


@DEFENSES.register("sat")
class SAT(NoDefense):
    """Standard adversarial training as in DDC-AT's code: the first half of the batch stays clean, the
    second half is replaced by its adversarial examples; loss = main + aux_weight * aux."""

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        target = self.resized(model, images, target)
        half = images.size(0) // 2
        adv = self.attack.build(unwrap(model), self.ignore_label)(images[half:], target[half:])
        return UpdateBatch(torch.cat([images[:half], adv]), target)

"""SEA: the segmentation ensemble attack, per image the worst case over APGD with three losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attack.apgd import APGD
from attack.base import Attack


class SEA(Attack):
    """Segmentation Ensemble Attack (Croce et al., "Towards Reliable Evaluation and Fast Training of
    Robust Semantic Segmentation Models", ECCV 2024): :class:`APGD` with balanced masked CE, masked CE
    and Jensen-Shannon losses (SEA's schedule each), keeping per image the result with the lowest pixel
    accuracy. Defaults: eps 8/255, 300 iterations per loss; ``class_weights`` go to the balanced member.

    The dataset-level worst case (a greedy per-image choice that minimises the pooled mIoU rather than
    each image's accuracy) is not computed here.
    """

    name = "sea"
    fields = frozenset({"eps", "steps", "class_weights"})
    iterative = False

    revision = APGD.revision

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 300,
        losses: Sequence[str] = ("balanced_masked_ce", "masked_ce", "js"),
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        self.members = [
            APGD(
                model,
                eps,
                steps,
                loss,
                ignore_index=ignore_index,
                **kwargs,
                class_weights=class_weights if loss == "balanced_masked_ce" else None,
            )
            for loss in losses
        ]

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        best, best_acc = x0.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device)
        for member in self.members:
            adv = member.perturb(x0, target)
            with torch.no_grad():
                acc = self.pixel_accuracy(self.logits(adv, size), target)
            better = acc < best_acc
            best[better] = adv[better]
            best_acc[better] = acc[better]
        return best

"""SEA: the segmentation ensemble attack, per image the worst case over APGD with three losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from attack.apgd import APGD
from attack.base import ATTACKS, Attack


class SEA(Attack):
    """Segmentation Ensemble Attack (Croce et al., "Towards Reliable Evaluation and Fast Training of
    Robust Semantic Segmentation Models", ECCV 2024), L-inf: :class:`APGD` with each of :attr:`losses`
    (SEA's schedule each), keeping per image the result with the lowest pixel accuracy.

    The dataset-level worst case (SEA's greedy choice per image that minimises the pooled mIoU) is the
    evaluation's (evaluation/worstcase.py), over the members' stored predictions.

    Args:
        model: segmentation model (logits in eval mode).
        eps: L-inf radius in [0, 1] pixel units.
        steps: iterations of each member.
        class_weights: the balanced member's class table (see :class:`APGD`).
        ignore_index: label ignored by the losses and the accuracy.
        kwargs: see :class:`attack.base.Attack` (mean, std, forward), given to every member.

    On an instance, ``members`` is the list of the built members, in the order of :attr:`losses`.
    """

    name = "sea"
    defaults = MappingProxyType(
        {"eps": APGD.defaults["eps"], "steps": APGD.defaults["steps"], "class_weights": APGD.defaults["class_weights"]}
    )
    losses = ("balanced_masked_ce", "masked_ce", "js")  # one APGD member each
    balanced = "balanced_masked_ce"  # the member that takes ``class_weights``

    revision = APGD.revision

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        class_weights: Sequence[float] | str | None = defaults["class_weights"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        declared = SEA.members({"eps": eps, "steps": steps, "class_weights": class_weights})
        self.member_attacks = [
            ATTACKS.get(name)(model, ignore_index=ignore_index, **kwargs, **params) for _, name, params in declared
        ]

    @classmethod
    def members(cls, params: Mapping[str, Any]) -> list[tuple[str, str, dict]]:
        """One APGD per loss (label suffix: the loss): ``params`` plus ``loss``, the class table on the
        balanced member only."""
        out = []
        for loss in cls.losses:
            member = {**params, "loss": loss}
            if loss != cls.balanced:
                member.pop("class_weights", None)
            out.append((loss, APGD.name, member))
        return out

    @classmethod
    def takes_class_weights(cls, params: Mapping[str, Any]) -> bool:
        return True

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        for _, name, params in cls.members({**cls.defaults, **values}):
            ATTACKS.get(name).validate(**params)

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        best, best_acc = x0.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device)
        for member in self.member_attacks:
            adv = member.perturb(x0, target)
            with torch.no_grad():
                acc = self.pixel_accuracy(self.logits(adv, size), target)
            better = acc < best_acc
            best[better] = adv[better]
            best_acc[better] = acc[better]
        return best

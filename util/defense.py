"""Defense strategies plugged into the single training loop.

A strategy gets the model and one training batch and returns what the loop backpropagates, plus the
logits/target the loop uses for its training metrics. Plain training (``none``) is the base case;
adversarial-training strategies differ only in how they build the batch and the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepResult:
    """What one training step produced."""

    loss: torch.Tensor  # the scalar to backpropagate
    main_loss: torch.Tensor  # detached, for logging
    aux_loss: torch.Tensor  # detached, for logging (0 without an aux head)
    logits: torch.Tensor  # main logits of the batch that was trained on, for metrics
    target: torch.Tensor  # its labels


def resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels at the model's output size when zoom_factor != 8 (semseg resizes targets bilinearly)."""
    if target.shape[-2:] == size:
        return target
    return F.interpolate(target.unsqueeze(1).float(), size=size, mode="bilinear",
                         align_corners=True).squeeze(1).long()


class NoDefense:
    """Standard training: loss = CE(main) + aux_weight * CE(aux) on the clean batch."""

    def __init__(self, aux_weight: float = 0.4, ignore_label: int = 255) -> None:
        self.aux_weight = aux_weight
        self.ignore_label = ignore_label

    def seg_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, main, aux) cross-entropy losses of a model's training outputs."""
        main = F.cross_entropy(outputs["out"], target, ignore_index=self.ignore_label)
        aux = torch.zeros((), device=main.device)
        if "aux" in outputs:
            aux = F.cross_entropy(outputs["aux"], target, ignore_index=self.ignore_label)
        return main + self.aux_weight * aux, main, aux

    def __call__(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> StepResult:
        outputs = model(images)
        target = resize_target(target, tuple(outputs["out"].shape[-2:]))
        loss, main, aux = self.seg_loss(outputs, target)
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), target)


def build_defense(name: str, aux_weight: float, ignore_label: int) -> NoDefense:
    """The strategy named by the config key ``defense``."""
    if name == "none":
        return NoDefense(aux_weight=aux_weight, ignore_label=ignore_label)
    raise ValueError(f"unknown defense {name!r}")

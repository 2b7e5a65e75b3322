"""What every training strategy shares: the update batch, the training attack, the plain loss (:class:`NoDefense`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import Attack
from attack.bim import BIM
from attack.pgd import PGD
from model.base import output_size
from util import dist
from util.config import IMAGENET_MEAN, IMAGENET_STD
from util.dist import unwrap
from util.registry import Registry

# The training strategies by their config name (``defense``); each registers itself where it is defined.
DEFENSES: Registry[type[NoDefense]] = Registry("defense")


@dataclass
class StepResult:
    """What one training step produced."""

    loss: torch.Tensor  # the scalar to backpropagate
    main_loss: torch.Tensor  # detached, for logging
    aux_loss: torch.Tensor  # detached, for logging (0 without an aux head)
    logits: torch.Tensor  # main logits of the batch that was trained on, for metrics
    target: torch.Tensor  # its labels


@dataclass
class UpdateBatch:
    """The batch the parameters are updated on."""

    images: torch.Tensor  # normalized images, clean and/or adversarial
    target: torch.Tensor  # labels at the model's output size
    mask_target: torch.Tensor | None = None  # DDC-AT router labels (1: send the pixel to cls2)
    adversarial: torch.Tensor | None = None  # TRADES: the adversarial images beside the clean ones


@dataclass
class TrainingAttack:
    """The attack crafted during training: BIM (PGD with ``random_start``) on the main output's CE.

    Defaults are the original's: 3 steps, eps 0.03 in [0, 1] pixels, step eps / steps.
    """

    eps: float = 0.03
    steps: int = 3
    step_size: float | None = None  # None: eps / steps
    random_start: bool = False
    norm: str = "linf"  # linf (BIM / PGD) | l2 (PGD with normalised-gradient steps, SAM-AT's --norm l2)
    train_mode: bool = False  # craft with the model in train mode (SAM-AT); default eval mode
    unnormalized: bool = False  # feed the model the [0, 1] pixels while crafting (SAM-AT's slip)
    keep: str = "last"  # linf: the last iterate, or best_batch_loss (PIR-AT's Pgd_Attack; see attack.bim.BIM)
    param_grads: bool = False  # linf: PIR-AT's slip, the attack's parameter gradients kept in the update
    mean: tuple[float, ...] = IMAGENET_MEAN  # the model's input normalisation (config keys mean, std)
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def alpha(self) -> float:
        """The step size: ``step_size``, or eps / steps."""
        return self.step_size if self.step_size is not None else self.eps / self.steps

    def build(self, model: nn.Module, ignore_label: int, forward=None) -> Attack:
        """BIM (L-inf) or PGD (L2) on ``model`` (or on ``forward``, e.g. one head), as configured."""
        common = {
            "eps": self.eps,
            "steps": self.steps,
            "alpha": self.alpha,
            "random_start": self.random_start,
            "ignore_index": ignore_label,
            "forward": forward,
            "train_mode": self.train_mode,
            "normalize_input": not self.unnormalized,
            "mean": self.mean,
            "std": self.std,
        }
        if self.norm == "l2":
            return PGD(model, norm="l2", last_iterate=True, **common)
        return BIM(model, keep=self.keep, param_grads=self.param_grads, **common)


def resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels at the model's output size when zoom_factor != 8 (semseg resizes targets bilinearly)."""
    if target.shape[-2:] == size:
        return target
    return F.interpolate(target.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=True).squeeze(1).long()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Pixel cross-entropy averaged over the valid pixels of the global batch: F.cross_entropy's mean with one
    process; with several, this process's share of the mean over all processes' pixels (util.dist.global_mean),
    so processes holding different numbers of ignored pixels still compute the one-process loss. A batch without
    a valid pixel contributes 0 (not F.cross_entropy's 0 / 0)."""
    if dist.world_size() == 1:
        # torch.where, not ``if``: no host sync in the step. Without a valid pixel the mean is 0 / 0 = nan, and
        # where's backward sends it a zero gradient, which nll_loss spreads over no pixel: the gradient is 0.
        mean = F.cross_entropy(logits, target, ignore_index=ignore_index)
        return torch.where((target != ignore_index).any(), mean, mean.new_zeros(()))
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return dist.global_mean(total, (target != ignore_index).sum())


@DEFENSES.register("none")
class NoDefense:
    """Standard training: loss = CE(main) + aux_weight * CE(aux) on the clean batch."""

    ddcat_heads = False  # the model needs DDC-AT's heads (cls1, cls2, mask1, aux_cls1)
    # Constructor arguments beyond the shared ones -> the config keys that set them (read by build_defense).
    config_keys: ClassVar[Mapping[str, str]] = {}

    def __init__(self, aux_weight: float = 0.4, ignore_label: int = 255, attack: TrainingAttack | None = None) -> None:
        self.aux_weight = aux_weight
        self.ignore_label = ignore_label
        self.attack = attack or TrainingAttack()

    def resized(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = output_size((images.shape[-2], images.shape[-1]), unwrap(model).zoom_factor)
        return resize_target(target, size)

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        return UpdateBatch(images, self.resized(model, images, target))

    def seg_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, main, aux) cross-entropy losses of a model's training outputs."""
        main = cross_entropy(outputs["out"], target, self.ignore_label)
        aux = cross_entropy(outputs["aux"], target, self.ignore_label) if "aux" in outputs else main.new_zeros(())
        return main + self.aux_weight * aux, main, aux

    def loss(self, model: nn.Module, batch: UpdateBatch) -> StepResult:
        outputs = model(batch.images)
        loss, main, aux = self.seg_loss(outputs, batch.target)
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), batch.target)

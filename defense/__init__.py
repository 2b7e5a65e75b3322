"""Defense strategies plugged into the single training loop.

A strategy does two things per iteration. :meth:`NoDefense.make_batch` builds the update batch (the
adversarial training strategies craft their examples here, with input-only gradients and the model in
eval mode); :meth:`NoDefense.loss` computes the training loss on it in train mode. The loop calls
``loss`` once per update, twice with SAM (the second time at the perturbed weights, on the same batch).

Only what the algorithm needs is computed; the examples, labels and update are those of the original
code (DDC-AT, ICCV 2021), which the tests check against a plain restatement:

* SAT attacks only the second half of the batch (the first half is trained on clean).
* DDC-AT attacks ``cls1`` only (no ``cls2``/``mask1``/aux heads, no losses times 0), takes the clean
  routed prediction of the first half from the first attack step's features, and computes the
  adversarial routed prediction only for that half (the second half's router target is all 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import eval_mode
from attack.bim import BIM
from model.base import output_size
from util import dist


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


@dataclass
class TrainingAttack:
    """The attack crafted during training: BIM (PGD with ``random_start``) on the main output's CE.

    Defaults are the original's: 3 steps, eps 0.03 in [0, 1] pixels, step eps / steps.
    """

    eps: float = 0.03
    steps: int = 3
    step_size: float | None = None  # None: eps / steps
    random_start: bool = False

    def build(self, model: nn.Module, ignore_label: int, forward=None) -> BIM:
        alpha = self.step_size if self.step_size is not None else self.eps / self.steps
        return BIM(model, eps=self.eps, steps=self.steps, alpha=alpha, ignore_index=ignore_label,
                   random_start=self.random_start, forward=forward)


def resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels at the model's output size when zoom_factor != 8 (semseg resizes targets bilinearly)."""
    if target.shape[-2:] == size:
        return target
    return F.interpolate(target.unsqueeze(1).float(), size=size, mode="bilinear",
                         align_corners=True).squeeze(1).long()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Pixel cross-entropy averaged over the valid pixels of the global batch: F.cross_entropy's mean with one
    process; with several, this process's share of the mean over all processes' pixels (util.dist.global_mean),
    so processes holding different numbers of ignored pixels still compute the one-process loss."""
    if dist.world_size() == 1:
        return F.cross_entropy(logits, target, ignore_index=ignore_index)
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return dist.global_mean(total, (target != ignore_index).sum())


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DataParallel / DistributedDataParallel wrapper."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


class NoDefense:
    """Standard training: loss = CE(main) + aux_weight * CE(aux) on the clean batch."""

    name = "none"

    def __init__(self, aux_weight: float = 0.4, ignore_label: int = 255,
                 attack: TrainingAttack | None = None) -> None:
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
        aux = torch.zeros((), device=main.device)
        if "aux" in outputs:
            aux = cross_entropy(outputs["aux"], target, self.ignore_label)
        return main + self.aux_weight * aux, main, aux

    def loss(self, model: nn.Module, batch: UpdateBatch) -> StepResult:
        outputs = model(batch.images)
        loss, main, aux = self.seg_loss(outputs, batch.target)
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), batch.target)


class SAT(NoDefense):
    """Standard adversarial training as in DDC-AT's code: the first half of the batch stays clean, the
    second half is replaced by its adversarial examples; loss = main + aux_weight * aux."""

    name = "sat"

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        target = self.resized(model, images, target)
        half = images.size(0) // 2
        adv = self.attack.build(unwrap(model), self.ignore_label)(images[half:], target[half:])
        return UpdateBatch(torch.cat([images[:half], adv]), target)


class DDCAT(NoDefense):
    """Dynamic divide-and-conquer adversarial training (Xu et al., ICCV 2021).

    Crafts the examples on ``cls1``; the router's labels are 1 on the clean half where the routed
    prediction of the adversarial image differs from that of the clean image, and 0 on the adversarial
    half. loss = CE(routed, y) + CE(mask1, router labels) + aux_weight * CE(aux_cls1, y); the logged
    main loss includes the router term, as in the original.
    """

    name = "ddcat"

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        net = unwrap(model)
        target = self.resized(model, images, target)
        half = images.size(0) // 2
        size = (images.shape[-2], images.shape[-1])
        clean_pred: list[torch.Tensor] = []

        def routed_argmax(feat: torch.Tensor, cls1: torch.Tensor | None = None) -> torch.Tensor:
            with torch.no_grad():
                return net.route(feat.detach(), size, cls1)[0].argmax(1)

        def cls1(x: torch.Tensor) -> torch.Tensor:
            _, feat = net.features(x)
            logits = net.upsample(net.cls1(feat), size)
            if not clean_pred:  # the first attack step runs on the clean images
                clean_pred.append(routed_argmax(feat[:half], logits[:half].detach()))
            return logits

        if self.attack.random_start and half:
            with eval_mode(net), torch.no_grad():
                clean_pred.append(routed_argmax(net.features(images[:half])[1]))
        adv = self.attack.build(net, self.ignore_label, forward=cls1)(images, target)
        with eval_mode(net), torch.no_grad():
            adv_pred = routed_argmax(net.features(adv[:half])[1]) if half else target[:0]
        mask_target = torch.zeros_like(target)
        mask_target[:half] = (adv_pred != clean_pred[0]).long()
        return UpdateBatch(torch.cat([images[:half], adv[half:]]), target, mask_target)

    def loss(self, model: nn.Module, batch: UpdateBatch) -> StepResult:
        outputs = model(batch.images)
        _, routed, aux = self.seg_loss(outputs, batch.target)
        main = routed + cross_entropy(outputs["mask"], batch.mask_target)
        loss = main + self.aux_weight * aux
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), batch.target)


DEFENSES = {cls.name: cls for cls in (NoDefense, SAT, DDCAT)}


def build_defense(name: str, aux_weight: float, ignore_label: int,
                  attack: TrainingAttack | None = None) -> NoDefense:
    """The strategy named by the config key ``defense``."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; expected one of {sorted(DEFENSES)}")
    return DEFENSES[name](aux_weight=aux_weight, ignore_label=ignore_label, attack=attack)

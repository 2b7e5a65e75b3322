"""DDC-AT: dynamic divide-and-conquer adversarial training."""

from __future__ import annotations

import torch
from torch import nn

from attack.base import eval_mode
from defense.base import DEFENSES, NoDefense, StepResult, UpdateBatch, cross_entropy, unwrap


@DEFENSES.register("ddcat")
class DDCAT(NoDefense):
    """Dynamic divide-and-conquer adversarial training (Xu et al., ICCV 2021).

    Crafts the examples on ``cls1``; the router's labels are 1 on the clean half where the routed
    prediction of the adversarial image differs from that of the clean image, and 0 on the adversarial
    half. loss = CE(routed, y) + CE(mask1, router labels) + aux_weight * CE(aux_cls1, y); the logged
    main loss includes the router term, as in the original.
    """

    ddcat_heads = True

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

"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019), per
pixel as the segmentation variants apply it."""

from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack, eval_mode
from defense.base import NoDefense, StepResult, TrainingAttack, UpdateBatch, unwrap
from util import dist


def pixel_kl(log_q: torch.Tensor, p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per pixel (summed over classes), summed over the valid pixels."""
    return ((p * (p.clamp_min(1e-12).log() - log_q)).sum(1) * valid).sum()


class TRADES(NoDefense):
    """loss = CE(clean) + aux_weight * CE_aux(clean) + beta * KL(p(clean) || p(adversarial)) per valid pixel, the
    adversarial example maximising that KL from x + 0.001 * N(0, 1) by sign steps in the L-inf ball (crafted in
    eval mode with input-only gradients, the clean distribution fixed while crafting)."""

    name = "trades"

    def __init__(
        self, aux_weight: float = 0.4, ignore_label: int = 255, attack: TrainingAttack | None = None, beta: float = 6.0
    ) -> None:
        super().__init__(aux_weight, ignore_label, attack)
        self.beta = beta

    def make_batch(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> UpdateBatch:
        target = self.resized(model, images, target)
        net, a = unwrap(model), self.attack
        pixels = Attack(net, a.eps)  # the attacks' pixel space: to_pixels / normalize
        x0 = pixels.to_pixels(images)
        step = a.step_size if a.step_size is not None else a.eps / a.steps
        valid = target != self.ignore_label
        with eval_mode(net):
            with torch.no_grad():
                p_clean = net(images).softmax(1)
            x = (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)
            for _ in range(a.steps):
                x.requires_grad_(True)
                kl = pixel_kl(net(pixels.normalize(x)).log_softmax(1), p_clean, valid)
                (grad,) = torch.autograd.grad(kl, x)
                x = torch.min(torch.max(x.detach() + step * grad.sign(), x0 - a.eps), x0 + a.eps).clamp(0, 1)
        return UpdateBatch(images, target, adversarial=pixels.normalize(x).detach())

    def loss(self, model: nn.Module, batch: UpdateBatch) -> StepResult:
        outputs = model(batch.images)
        natural, main, aux = self.seg_loss(outputs, batch.target)
        valid = batch.target != self.ignore_label
        kl = pixel_kl(model(batch.adversarial)["out"].log_softmax(1), outputs["out"].softmax(1), valid)
        robust = dist.global_mean(kl, valid.sum())  # the mean over the global batch's valid pixels
        loss = natural + self.beta * robust
        return StepResult(loss, main.detach(), aux.detach(), outputs["out"].detach(), batch.target)

"""The original DDC-AT code's training iteration, restated on this project's models: the baseline of
``train_step.py``.

It does the same work as ``tool_train/train_{sat,ddcat}_psp.py`` of the original release per
iteration: every attack step runs the model's full training-branch forward (all heads, the aux head
and their losses, the extra losses multiplied by 0) and a ``loss.backward()`` that also computes the
parameter gradients; DDC-AT runs one more full forward per step for the routed prediction; SAT attacks
the whole batch and uses half. The numbers it produces are those of :mod:`defense` (the tests
check the crafted examples and updates against such a restatement); only the cost differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import eval_mode
from util.config import IMAGENET_MEAN, IMAGENET_STD


def full_forward(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The original models' ``indicate=1`` branch: every head, upsampled, and the losses on them."""
    size = (x.shape[-2], x.shape[-1])
    x_aux, feat = net.features(x)
    aux_head = net.aux_cls1 if hasattr(net, "aux_cls1") else net.aux
    out = {"aux": net.upsample(aux_head(x_aux), size)}
    if hasattr(net, "cls1"):
        out["cls1"] = net.upsample(net.cls1(feat), size)
        out["main"], out["mask"] = net.route(feat, size, out["cls1"])
        out["loss"] = F.cross_entropy(out["main"], target, ignore_index=255) + F.cross_entropy(
            out["mask"], torch.zeros_like(target)
        )
    else:
        out["main"] = net.upsample(net.cls(feat), size)
        out["loss"] = F.cross_entropy(out["main"], target, ignore_index=255)
    out["aux_loss"] = F.cross_entropy(out["aux"], target, ignore_index=255)
    return out


def original_bim(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    eps: float = 0.03,
    steps: int = 3,
) -> torch.Tensor:
    """BIM as the original crafts it (parameter gradients included)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    ddcat = hasattr(net, "cls1")
    with eval_mode(net):
        x0 = images * std + mean
        adv = images.clone()
        for _ in range(steps):
            adv = adv.detach().requires_grad_(True)
            out = full_forward(net, adv, target)
            attacked = out["cls1"] if ddcat else out["main"]
            loss = F.cross_entropy(attacked, target, ignore_index=255) + out["loss"] * 0 + out["aux_loss"] * 0
            optimizer.zero_grad()
            loss.backward()
            if ddcat:  # the routed prediction of the current iterate, one more full forward
                full_forward(net, adv.detach(), target)["main"].argmax(1)
            pixels = adv.detach() * std + mean + eps / steps * adv.grad.sign()
            adv = (torch.min(torch.max(pixels, x0 - eps), x0 + eps).clamp(0, 1) - mean) / std
        full_forward(net, adv.detach(), target)["main"].argmax(1)  # the final prediction
        optimizer.zero_grad()
    return adv.detach()


def original_step(
    defense: str,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    aux_weight: float = 0.4,
) -> torch.Tensor:
    """One training iteration of the original code for ``defense`` in none | sat | ddcat."""
    batch = images
    if defense != "none":
        adv = original_bim(net, optimizer, images, target)
        half = images.size(0) // 2
        batch = torch.cat([images[:half], adv[half:]])
    out = full_forward(net, batch, target)
    loss = out["loss"] + aux_weight * out["aux_loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def pirat_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    eps: float = 4 / 255,
    alpha: float = 0.01,
    steps: int = 5,
) -> torch.Tensor:
    """One iteration of PIR-AT's ``tools/train_rob_seg.py`` (its ``Pgd_Attack``) on a UperNet-ConvNeXt: the
    gradients zeroed, PGD in eval mode whose every ``loss.backward()`` also computes (and keeps) the parameters'
    gradients, the best-batch-loss iterate, then main + 0.4 aux in train mode and the step. ``images`` in [0, 1]."""
    optimizer.zero_grad(set_to_none=True)
    net.eval()
    delta = torch.zeros_like(images, requires_grad=True)
    running_best = torch.zeros(images.size(0), device=images.device)
    best_delta = torch.zeros_like(images)
    for _ in range(steps):
        loss = F.cross_entropy(net((images + delta).clamp(0.0, 1.0)), target)
        ind = (loss.detach() >= running_best).nonzero().squeeze()
        running_best[ind] = loss.detach()
        loss.backward()
        delta.data = delta + alpha * delta.grad.sign()
        delta.data = ((images + delta.data).clamp(0.0, 1.0) - images).clamp(-eps, eps)
        delta.grad.zero_()
        best_delta[ind] = delta[ind].data
    net.train()
    outputs = net((images + best_delta).clamp(0.0, 1.0))
    loss = F.cross_entropy(outputs["out"], target, ignore_index=-1) + 0.4 * F.cross_entropy(
        outputs["aux"], target, ignore_index=-1
    )
    loss.backward()
    optimizer.step()
    return loss.detach()

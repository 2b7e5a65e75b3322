"""One parameter update of the single training loop: the strategy's batch, then the optimizer's step (SAM's two)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from defense.base import NoDefense, StepResult
from util import dist
from util.amp import MixedPrecision
from util.errors import UserError
from util.optim import SAM, frozen_bn_stats


@dataclass(frozen=True)
class StepSettings:
    """What a step needs besides the model, the strategy and the optimizer."""

    sam_warmup_iters: int = 0  # SAM: plain steps of the base (or warm-up) optimizer first
    sam_second_pass_updates_bn: bool = False  # SAM-AT: the forward at w + e counts in BN's statistics too
    save_path: str = ""  # named when the loss diverges (its last checkpoint is intact)


def check_finite(loss: torch.Tensor, curr_iter: int, save_path: str, where: str = "") -> None:
    """Stop before a non-finite loss reaches the weights (and so a checkpoint)."""
    if not torch.isfinite(loss):
        raise UserError(
            f"loss{where} became {loss.item()} at iteration {curr_iter}: the weights diverged (lower "
            f"base_lr, or sam_rho with SAM), fp16 overflowed (amp bf16 or off) or an image holds "
            f"non-finite values; the last checkpoint in '{save_path}' is intact"
        )


def sam_second_pass(model, defense, optimizer: SAM, batch, amp: MixedPrecision, settings, curr_iter: int) -> None:
    """SAM at w + e: the gradient of the same batch's loss there, then back to w (the caller steps from w)."""
    optimizer.zero_grad(set_to_none=True)
    bn = nullcontext() if settings.sam_second_pass_updates_bn else frozen_bn_stats(model)
    with bn, amp.autocast():
        second = defense.loss(model, batch).loss
    if not amp.scaler.is_enabled():  # fp16's scaler skips a step with non-finite gradients itself
        second_mean = dist.all_reduce_mean(second.detach().float())
        if not torch.isfinite(second_mean):
            optimizer.restore()
            check_finite(second_mean, curr_iter, settings.save_path, " at SAM's w + e")
    amp.scaler.scale(second).backward()
    optimizer.restore()


def train_step(
    model: nn.Module,
    defense: NoDefense,
    optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    curr_iter: int,
    amp: MixedPrecision | None = None,
    settings: StepSettings | None = None,
) -> StepResult:
    """One update: the defense builds the batch, then SGD/Adam step, or SAM's two passes on that batch.

    The returned losses are means over all processes (for logs). Under DDP both SAM passes average the
    gradient over processes, so its ascent is that of the global batch, as with one process.
    """
    amp, settings = amp or MixedPrecision(), settings or StepSettings()
    optimizer.zero_grad(set_to_none=True)  # before crafting: an attack with param_grads adds to .grad (PIR-AT)
    with amp.autocast(crafting=True):
        batch = defense.make_batch(model, images, target)
    with amp.autocast():
        step = defense.loss(model, batch)
    logged = dist.all_reduce_mean(torch.stack([step.loss.detach(), step.main_loss, step.aux_loss]).float())
    check_finite(logged[0], curr_iter, settings.save_path)
    amp.scaler.scale(step.loss).backward()
    base = optimizer
    if isinstance(optimizer, SAM):
        base = optimizer.base
        if curr_iter <= settings.sam_warmup_iters:
            base = optimizer.warmup_optimizer()
        elif optimizer.ascend():
            sam_second_pass(model, defense, optimizer, batch, amp, settings, curr_iter)
    amp.scaler.step(base)
    amp.scaler.update()
    return replace(step, loss=logged[0], main_loss=logged[1], aux_loss=logged[2])

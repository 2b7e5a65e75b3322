"""One parameter update of the single training loop: the strategy's batch, then the optimizer's step (SAM's two)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from defense.base import StepResult
from util import dist
from util.amp import MixedPrecision
from util.errors import UserError
from util.optim import SAM, frozen_bn_stats


def check_finite(cfg, loss: torch.Tensor, curr_iter: int, where: str = "") -> None:
    """Stop before a non-finite loss reaches the weights (and so a checkpoint)."""
    if not torch.isfinite(loss):
        raise UserError(
            f"loss{where} became {loss.item()} at iteration {curr_iter}: the weights diverged (lower "
            f"base_lr, or sam_rho with SAM), fp16 overflowed (amp bf16 or off) or an image holds "
            f"non-finite values; the last checkpoint in '{cfg.save_path}' is intact"
        )


def train_step(
    cfg, model, defense, optimizer, images, target, curr_iter: int, amp: MixedPrecision | None = None
) -> StepResult:
    """One update: the defense builds the batch, then SGD/Adam step, or SAM's two passes on that batch.

    The returned losses are means over all processes (for logs). Under DDP both SAM passes average the
    gradient over processes, so its ascent is that of the global batch, as with one process.
    """
    amp = amp or MixedPrecision()
    with amp.autocast(crafting=True):
        batch = defense.make_batch(model, images, target)
    with amp.autocast():
        step = defense.loss(model, batch)
    logged = dist.all_reduce_mean(torch.stack([step.loss.detach(), step.main_loss, step.aux_loss]).float())
    check_finite(cfg, logged[0], curr_iter)
    optimizer.zero_grad(set_to_none=True)
    amp.scaler.scale(step.loss).backward()
    base = optimizer
    if isinstance(optimizer, SAM):
        base = optimizer.base
        if curr_iter <= cfg.sam_warmup_iters:
            base = optimizer.warmup_optimizer()
        elif optimizer.ascend():
            optimizer.zero_grad(set_to_none=True)
            bn = nullcontext() if cfg.sam_second_pass_updates_bn else frozen_bn_stats(model)
            with bn, amp.autocast():
                second = defense.loss(model, batch).loss
            if not amp.scaler.is_enabled():  # fp16's scaler skips a step with non-finite gradients itself
                second_mean = dist.all_reduce_mean(second.detach().float())
                if not torch.isfinite(second_mean):
                    optimizer.restore()
                    check_finite(cfg, second_mean, curr_iter, " at SAM's w + e")
            amp.scaler.scale(second).backward()
            optimizer.restore()
    amp.scaler.step(base)
    amp.scaler.update()
    return replace(step, loss=logged[0], main_loss=logged[1], aux_loss=logged[2])

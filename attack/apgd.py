"""APGD with segmentation losses, and the multi-radius schedule of SEA."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import Attack

LOSSES = ("ce", "masked_ce", "balanced_masked_ce", "js", "masked_spherical", "segpgd")


def checkpoints(iterations: int) -> list[int]:
    """APGD's step-size checkpoints w_j = ceil(p_j * N): p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * iterations, 6)) for q in p if q <= 1})


def pixel_losses(name: str, logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                 step: int = 0, steps: int = 1) -> torch.Tensor:
    """Per-image loss (N,) averaged over the image's pixels; ignored pixels contribute 0.

    ce: cross-entropy. masked_ce: CE on still-correct pixels only. balanced_masked_ce: masked CE with
    each class weighted by 1 / its pixel count in the image. js: Jensen-Shannon divergence between
    softmax and one-hot. masked_spherical: -z_y / ||z||_2 on still-correct pixels. segpgd: SegPGD's
    (1 - l) * CE on correct + l * CE on wrong pixels, l = step / (2 * steps).
    """
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    hw = target.shape[-2] * target.shape[-1]
    correct = (logits.detach().argmax(1) == safe) & valid
    ce = F.cross_entropy(logits, safe, reduction="none") * valid
    if name == "ce":
        per_pixel = ce
    elif name == "masked_ce":
        per_pixel = ce * correct
    elif name == "balanced_masked_ce":
        classes = logits.shape[1]
        onehot = F.one_hot(safe, classes) * valid[..., None]  # (N, H, W, C)
        counts = onehot.flatten(1, 2).sum(1)  # (N, C)
        present = (counts > 0).sum(1).clamp_min(1).view(-1, 1, 1)
        weight = (onehot / counts.clamp_min(1)[:, None, None, :]).sum(-1) * hw / present
        per_pixel = ce * correct * weight
    elif name == "js":
        p = logits.softmax(1)
        q = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(p)
        m = (p + q) / 2
        kl_p = (p * (p.clamp_min(1e-12).log() - m.clamp_min(1e-12).log())).sum(1)
        kl_q = (q * (q.clamp_min(1e-12).log() - m.clamp_min(1e-12).log())).sum(1)
        per_pixel = 0.5 * (kl_p + kl_q) * valid
    elif name == "masked_spherical":
        z_y = logits.gather(1, safe[:, None])[:, 0]
        per_pixel = -z_y / logits.norm(dim=1).clamp_min(1e-12) * correct
    elif name == "segpgd":
        lam = step / (2 * steps)
        per_pixel = ((1 - lam) * correct + lam * (valid & ~correct)) * ce
    else:
        raise ValueError(f"unknown APGD loss {name!r}; expected one of {LOSSES}")
    return per_pixel.flatten(1).sum(1) / hw


class APGD(Attack):
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), L-inf, with segmentation losses as in SEA (Croce et al.,
    "Towards Reliable Evaluation and Fast Training of Robust Semantic Segmentation Models", ECCV 2024).

    Sign steps with momentum 0.75 from step size 2 * radius; at APGD's checkpoints the step is halved
    (and the run restarts from the best point) when fewer than 75 % of the steps since the last
    checkpoint raised the loss, or when neither the step nor the best loss changed. With ``stages`` the
    iterations are split over shrinking radii (SEA: 30/30/40 % at 2, 1.5, 1 times eps), each stage
    starting from the previous stage's best point projected into its ball. Returns per image the iterate
    with the lowest pixel accuracy; an image stops being attacked once it is fully misclassified.
    Defaults: eps 8/255, 300 iterations, masked CE, SEA's stages.

    Args:
        model: segmentation model (logits in eval mode).
        eps: final L-inf radius in [0, 1] pixel units.
        steps: total iterations over all stages.
        loss: one of :data:`LOSSES`.
        stages: (fraction of iterations, radius / eps) per stage.
        momentum: APGD's alpha.
        rho: fraction of loss increases below which the step is halved.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 300, loss: str = "masked_ce",
                 stages: tuple[tuple[float, float], ...] = ((0.3, 2.0), (0.3, 1.5), (0.4, 1.0)),
                 momentum: float = 0.75, rho: float = 0.75, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if steps < len(stages):
            raise ValueError(f"APGD needs at least one step per stage, got steps={steps}")
        self.steps = steps
        self.loss_name = loss
        self.stages = stages
        self.momentum = momentum
        self.rho = rho
        self.schedule: list[torch.Tensor] = []  # per-image step sizes after each checkpoint of the last call

    def stage_iterations(self) -> list[int]:
        counts = [max(1, round(fraction * self.steps)) for fraction, _ in self.stages]
        counts[-1] = max(1, self.steps - sum(counts[:-1]))
        return counts

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = target.shape[-2:]
        best = x0.clone()
        with torch.no_grad():
            best_acc = self.pixel_accuracy(self.logits(x0, size), target)
        x = x0.clone()
        done = 0
        self.schedule = []
        for iterations, (_, scale) in zip(self.stage_iterations(), self.stages):
            radius = self.eps * scale
            x = torch.min(torch.max(x, x0 - radius), x0 + radius).clamp(0, 1)
            if radius <= self.eps:  # only points of the final ball can be returned
                stage_best, stage_acc = best, best_acc
            else:  # a wider stage only finds the next stage's starting point
                stage_best, stage_acc = x.clone(), torch.full_like(best_acc, float("inf"))
            self._stage(x, x0, target, size, radius, iterations, done, stage_best, stage_acc)
            done += iterations
            x = stage_best.clone()
        return best

    def _loss_and_grad(self, x: torch.Tensor, target: torch.Tensor, size, step: int):
        x = x.detach().requires_grad_(True)
        logits = self.logits(x, size)
        losses = pixel_losses(self.loss_name, logits, target, self.ignore_index, step, self.steps)
        grad = self.input_grad(losses.sum(), x)
        return losses.detach(), grad, self.pixel_accuracy(logits.detach(), target)

    def _stage(self, x, x0, target, size, radius, iterations, offset, best, best_acc) -> None:
        """One APGD run in the ``radius`` ball; updates ``best`` / ``best_acc`` in place."""
        n = x0.shape[0]
        shape = (n, 1, 1, 1)
        step = torch.full(shape, 2 * radius, device=x0.device, dtype=x0.dtype)
        marks = set(checkpoints(iterations)) - {0}
        last_mark = 0

        def project(z: torch.Tensor) -> torch.Tensor:
            return torch.min(torch.max(z, x0 - radius), x0 + radius).clamp(0, 1)

        def keep(z: torch.Tensor, acc: torch.Tensor) -> None:
            better = acc < best_acc
            best[better] = z[better]
            best_acc[better] = acc[better]

        loss, grad, acc = self._loss_and_grad(x, target, size, offset)
        keep(x, acc)
        x_max, loss_max, grad_max = x.clone(), loss.clone(), grad.clone()
        x_prev = x.clone()
        increases = torch.zeros(n, device=x0.device)
        reduced = torch.zeros(n, dtype=torch.bool, device=x0.device)  # the step was halved at the last checkpoint
        loss_max_at_mark = loss_max.clone()
        active = best_acc > 0
        for k in range(iterations):
            if not active.any():
                break
            z = project(x + step * grad.sign())
            coeff = self.momentum if k > 0 else 1.0
            x_new = project(x + coeff * (z - x) + (1 - coeff) * (x - x_prev))
            x_new = torch.where(active.view(shape), x_new, x)
            loss_new, grad_new, acc = self._loss_and_grad(x_new, target, size, offset + k + 1)
            keep(x_new, acc)
            increases += (loss_new > loss).float()
            improved = loss_new > loss_max
            x_max[improved] = x_new[improved]
            grad_max[improved] = grad_new[improved]
            loss_max = torch.where(improved, loss_new, loss_max)
            x_prev, x, loss, grad = x, x_new, loss_new, grad_new
            if k + 1 in marks:
                span = k + 1 - last_mark
                halve = (increases < self.rho * span) | (~reduced & (loss_max_at_mark >= loss_max))
                step = torch.where(halve.view(shape), step / 2, step)
                restart = halve.view(shape)  # continue from the best point (no new forward needed)
                x, x_prev = torch.where(restart, x_max, x), torch.where(restart, x_max, x_prev)
                grad = torch.where(restart, grad_max, grad)
                loss = torch.where(halve, loss_max, loss)
                self.schedule.append(step.view(-1).clone())
                increases.zero_()
                reduced, loss_max_at_mark = halve, loss_max.clone()
                last_mark = k + 1
            active = best_acc > 0

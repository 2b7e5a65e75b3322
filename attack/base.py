"""The attack base class: attacks think in [0, 1] pixel space on batches of normalized inputs.

A subclass only writes :meth:`Attack.perturb`. The base un-normalizes the model's input, puts the model in
eval mode (BN running statistics untouched, no dropout), restores its train/eval mode afterwards, takes
input-only gradients (``torch.autograd.grad``: parameter gradients are neither computed nor accumulated),
and checks the result: finite, in [0, 1], inside the eps-ball.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from util.dataset import IMAGENET_MEAN, IMAGENET_STD


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (BN running statistics untouched, no dropout), then
    restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Attack:
    """Base class of all attacks.

    Args:
        model: segmentation model returning logits (N, C, h, w) in eval mode (unwrapped, not DDP).
        eps: radius of the L-inf ball in [0, 1] pixel units.
        ignore_index: label value that contributes no loss.
        mean: per-channel mean of the model's input normalization, as fractions of 1.
        std: per-channel std of the model's input normalization, as fractions of 1.
        forward: what to attack instead of ``model(x)`` (normalized input -> logits), e.g. one head
            of a multi-head model; it runs while ``model`` is in eval mode.
    """

    norm = "linf"  # threat model: "linf" or "l2" (per image)

    def __init__(self, model: nn.Module, eps: float, ignore_index: int = 255,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.model = model
        self.forward = forward or model
        self.eps = eps
        self.ignore_index = ignore_index
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized input -> [0, 1] pixels."""
        return x * self.std.to(x) + self.mean.to(x)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> the model's normalized input."""
        return (x01 - self.mean.to(x01)) / self.std.to(x01)

    def logits(self, x01: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Model logits for pixel input, bilinearly resized to the label size when the model zooms."""
        out = self.forward(self.normalize(x01))
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return out

    def ce_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed pixel cross-entropy without ignored pixels (its sign-gradient equals the mean's; an
        all-ignored crop gives zero gradient instead of NaN)."""
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")

    def input_grad(self, loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d loss / d x only; no parameter gradient is computed or stored."""
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def project(self, x01: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around ``x0`` (L-inf: clip; L2: rescale per image) and [0, 1]."""
        if self.norm == "l2":
            delta = x01 - x0
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return (x0 + delta * (self.eps / norms).clamp(max=1.0)).clamp_(0.0, 1.0)
        return torch.min(torch.max(x01, x0 - self.eps), x0 + self.eps).clamp_(0.0, 1.0)

    def pixel_accuracy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image accuracy over non-ignored pixels (1 for an image without labelled pixels)."""
        valid = target != self.ignore_index
        correct = ((logits.argmax(1) == target) & valid).flatten(1).sum(1)
        total = valid.flatten(1).sum(1)
        return torch.where(total > 0, correct / total.clamp_min(1), torch.ones_like(correct, dtype=torch.float))

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return adversarial pixels for clean pixels ``x0`` (N, 3, H, W) in [0, 1] and labels (N, H, W)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attack a normalized batch; returns the normalized adversarial batch (detached)."""
        x0 = self.to_pixels(x.detach())
        with eval_mode(self.model), torch.enable_grad():
            adv = self.perturb(x0, target.long()).detach()
        self.check(adv, x0)
        return self.normalize(adv)

    def check(self, adv: torch.Tensor, x0: torch.Tensor) -> None:
        """Fail loudly if the attack left the threat model."""
        tol = 1e-5
        if not torch.isfinite(adv).all():
            raise RuntimeError(f"{type(self).__name__} produced non-finite pixels")
        if adv.min() < -tol or adv.max() > 1 + tol:
            raise RuntimeError(f"{type(self).__name__} left [0, 1]: range [{adv.min():.4f}, {adv.max():.4f}]")
        delta = adv - x0.clamp(0, 1)
        if not delta.numel():
            return
        if self.norm == "l2":
            dist = delta.flatten(1).norm(dim=1).max().item()
            tol = 1e-4 * max(1.0, self.eps)
        else:
            dist = delta.abs().max().item()
        if dist > self.eps + tol:
            raise RuntimeError(f"{type(self).__name__} left the eps-ball: |delta|_{self.norm} = {dist:.5f} > {self.eps}")

"""Building blocks that more than one model family uses."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability ``p`` (survivors scaled
    by 1 / (1 - p)); the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep


def linear_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth rates of ``blocks`` blocks in a row: linear in depth, from 0 to ``rate``."""
    return [rate * k / max(blocks - 1, 1) for k in range(blocks)]

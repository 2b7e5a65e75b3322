"""The tiny networks the tests train and attack, one way to fit them, and checks shared by the attack tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySeg(nn.Module):
    """conv -> BN -> ReLU [-> Dropout2d] -> conv: a segmenter small enough to train in a test, with ``kernel``
    > 1 giving spatial context (so windows and padding matter) and dropout to check that attacks use eval mode."""

    def __init__(
        self, classes: int = 3, hidden: int = 16, kernel: int = 1, head_kernel: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        head_kernel = kernel if head_kernel is None else head_kernel
        drop = [nn.Dropout2d(dropout)] if dropout else []
        self.body = nn.Sequential(
            nn.Conv2d(3, hidden, kernel, padding=kernel // 2),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            *drop,
            nn.Conv2d(hidden, classes, head_kernel, padding=head_kernel // 2),
        )

    def forward(self, x):
        return self.body(x)


def fit(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int, lr: float = 0.05) -> nn.Module:
    """Adam on the pixel CE (label 255 ignored); returns the model in eval mode with no gradients left."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), target, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """Pixel accuracy over the labelled pixels."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    valid = target != 255
    return ((pred == target) & valid).sum().item() / valid.sum().item()


def check_deterministic(make, trained, random_start: bool) -> None:
    """The same seed gives the same examples; with a random start another seed gives others."""
    model, x, target = trained
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(make(model)(x, target))
    assert torch.equal(runs[0], runs[1])
    if random_start:
        assert not torch.equal(runs[0], runs[2])


def check_attack(make, trained, name: str, tol: float = 1e-4) -> tuple:
    """Run ``make(model)`` on the trained network (seed 1): finite pixels in [0, 1], inside the eps-ball, accuracy
    down by more than 0.1 from a clean accuracy above 0.9, no parameter gradient, the model left in eval mode.
    Returns (attack, clean pixels, adversarial pixels)."""
    model, x, target = trained
    torch.manual_seed(1)
    attack = make(model)
    adv = attack(x, target)
    x01, adv01 = attack.to_pixels(x), attack.to_pixels(adv)
    delta = (adv01 - x01).flatten(1)
    dist = delta.norm(dim=1) if attack.norm == "l2" else delta.abs().amax(1)
    assert torch.isfinite(adv01).all() and adv01.min() >= -1e-5 and adv01.max() <= 1 + 1e-5
    assert (dist <= attack.eps + tol).all()
    clean = accuracy(model, x, target)
    assert clean > 0.9
    assert accuracy(model, adv, target) < clean - 0.1, name
    assert all(p.grad is None for p in model.parameters()) and not model.training
    return attack, x01, adv01


def opts_for(tiny_opts: list[str], root) -> list[str]:
    """``tiny_opts`` with the data paths moved to a copy of the tiny dataset at ``root``."""
    out = list(tiny_opts)
    for key, value in (
        ("data_root", root),
        ("train_list", root / "list/train.txt"),
        ("test_list", root / "list/val.txt"),
        ("val_list", root / "list/val.txt"),
    ):
        out[out.index(key) + 1] = str(value)
    return out

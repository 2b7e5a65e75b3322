"""One PIR-AT training step of a tiny UperNet-ConvNeXt in float64 against a restatement of nmndeep/Robust-Segmentation's
(``Pgd_Attack.adv_attack`` with the 'pgd' loss, crafted in eval mode; then the model's training loss, main + 0.4 aux,
and AdamW over ``group_weight``'s two groups), written here."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from attack.bim import BIM
from defense import PGDAT, TrainingAttack, train_step
from model.upernet import UperNetConvNeXt
from util.optim import build_optimizer

TINY = {"depths": (1, 1, 2, 1), "dims": (8, 16, 24, 32), "channels": 16, "aux_channels": 8, "drop_path_rate": 0.0}
EPS, STEPS, ALPHA = 4 / 255, 5, 0.01


def reference_attack(model, x, y, eps=EPS, alpha=ALPHA):
    """Pgd_Attack.adv_attack: the batch's mean CE; best_delta takes the delta after the step whenever the loss
    before it reached the running best (which starts at 0)."""
    model.eval()
    delta = torch.zeros_like(x, requires_grad=True)
    running_best = torch.zeros(x.size(0), dtype=x.dtype)
    best_delta = torch.zeros_like(x)
    for _ in range(STEPS):
        loss = F.cross_entropy(model((x + delta).clamp(0.0, 1.0)), y)
        ind = (loss.detach() >= running_best).nonzero().squeeze()
        running_best[ind] = loss.detach()
        loss.backward()
        delta.data = delta + alpha * delta.grad.sign()
        delta.data = (x + delta.data).clamp(0.0, 1.0) - x
        delta.data = delta.data.clamp(-eps, eps)
        delta.grad.zero_()
        best_delta[ind] = delta[ind].data
    return (x + best_delta).clamp(0.0, 1.0)


def reference_groups(model):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or "norm" in name else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@pytest.mark.parametrize("param_grads", [True, False])
def test_one_pirat_step_equals_the_reference_s_in_float64(param_grads):
    """The reference zeroes the gradients before its attack, whose every loss.backward() also fills the
    parameters' .grad, and steps on their sum with the training loss's: adv_param_grads restates that exactly;
    without it the update is the training loss's alone."""
    torch.manual_seed(0)
    model = UperNetConvNeXt(3, **TINY).double()
    reference = copy.deepcopy(model)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 32, 32))
    attack = TrainingAttack(
        EPS, STEPS, ALPHA, keep="best_batch_loss", param_grads=param_grads, mean=(0, 0, 0), std=(1, 1, 1)
    )
    optimizer, _ = build_optimizer("adamw", model, 1e-3, weight_decay=0.01, head_mult=1.0)
    train_step(model.train(), PGDAT(attack=attack), optimizer, x, y, curr_iter=1)

    ref_opt = torch.optim.AdamW(reference_groups(reference), 1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ref_opt.zero_grad(set_to_none=True)
    adv = reference_attack(reference, x, y)  # its backward() calls fill the parameters' .grad too
    reference.train()
    outputs = reference(adv)
    loss = F.cross_entropy(outputs["out"], y, ignore_index=-1) + 0.4 * F.cross_entropy(
        outputs["aux"], y, ignore_index=-1
    )
    loss.backward()
    ref_opt.step()
    gaps = [(a - b).abs().max().item() for a, b in zip(model.state_dict().values(), reference.state_dict().values())]
    assert max(gaps) < 1e-12 if param_grads else max(gaps) > 1e-5


class _Wavy(torch.nn.Module):
    """Logits (0, 5 sin(40 x)) per pixel: the CE of class 0 rises and falls along x, so sign steps of 0.04
    overshoot its peaks and the batch loss falls at some steps."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), 5 * torch.sin(40 * x[:, :1])], 1)


def test_best_batch_loss_keeps_the_reference_s_iterate_where_the_last_differs():
    x = torch.full((2, 3, 4, 4), 0.45, dtype=torch.float64) + 0.01 * torch.arange(2, dtype=torch.float64).view(
        2, 1, 1, 1
    )
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    expected = reference_attack(_Wavy(), x, y, eps=0.1, alpha=0.04)
    common = {"eps": 0.1, "steps": STEPS, "alpha": 0.04, "mean": (0, 0, 0), "std": (1, 1, 1)}
    kept = BIM(_Wavy(), keep="best_batch_loss", **common)(x, y)
    last = BIM(_Wavy(), **common)(x, y)
    assert torch.allclose(kept, expected, rtol=0, atol=1e-12)
    assert (last - expected).abs().max() > 0.01

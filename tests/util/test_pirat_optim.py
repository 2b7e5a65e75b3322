"""PIR-AT's optimiser and schedule: AdamW with its two parameter groups and WarmupPolyLR, against restatements of
nmndeep/Robust-Segmentation's ``group_weight`` and ``WarmupPolyLR`` (linear warm-up) written here."""

from __future__ import annotations

import pytest
import torch

from model.registry import MODELS
from tests.conftest import ROOT
from util.config import load_config
from util.errors import UserError
from util.optim import build_optimizer, poly_lr, set_lr


def reference_groups(model):
    """group_weight: 1-d parameters and any with 'norm' in the name without weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or "norm" in name else decay).append(param)
    return decay, no_decay


def reference_lr(base, k, max_iter, power, warmup_iter, warmup_ratio):
    """WarmupPolyLR(warmup='linear') at scheduler step k: the rate of the k-th update (from 0)."""
    if k < warmup_iter:
        return base * (warmup_ratio + (1.0 - warmup_ratio) * k / warmup_iter)
    return base * (1 - (k - warmup_iter) / (max_iter - warmup_iter)) ** power


def test_adamw_groups_are_the_reference_s():
    model = MODELS.get("upernet_convnext_demo")("upernet_convnext_demo", 5)
    optimizer, split = build_optimizer("adamw", model, 1e-3, weight_decay=0.01, head_mult=1.0)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    plain = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay, no_decay = reference_groups(model)
    assert decayed == {id(p) for p in decay} and plain == {id(p) for p in no_decay}
    assert len(decayed) + len(plain) == len(list(model.parameters()))
    assert any(p.ndim == 4 for p in decay) and any(p.ndim == 1 for p in no_decay)  # convs decay, gammas do not
    assert split == 2 and all(g["lr"] == 1e-3 for g in optimizer.param_groups)  # backbone (2 groups), then heads
    set_lr(optimizer, 5e-4, split, 1.0)
    assert all(g["lr"] == 5e-4 for g in optimizer.param_groups)


@pytest.mark.parametrize("power,warmup,ratio", [(1.0, 40, 1e-5), (0.9, 0, 0.0), (0.9, 7, 0.1)])
def test_the_schedule_is_warmup_poly_over_hundreds_of_iterations(power, warmup, ratio):
    """The reference's scheduler, stepped after each update as its training loop does, against poly_lr."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    max_iter = 300
    for k in range(max_iter):
        ours = poly_lr(1e-3, k, max_iter, power, 0.0, warmup, ratio)
        assert ours == pytest.approx(reference_lr(1e-3, k, max_iter, power, warmup, ratio), rel=1e-12, abs=1e-18)
        optimizer.step()
    assert poly_lr(1e-3, 0, max_iter, power, 0.0, warmup, ratio) == pytest.approx(1e-3 * (ratio if warmup else 1))


def test_warmup_keys_are_checked_in_one_line():
    config = str(ROOT / "config/synthetic/synthetic_pspnet18.yaml")
    with pytest.raises(UserError, match="need warmup_epochs >= 0 and warmup_ratio in \\[0, 1\\]"):
        load_config(config, ["warmup_ratio", "2"])
    assert load_config(config, ["optimizer", "adamw"]).optimizer == "adamw"


def test_pir_at_s_attack_options_are_refused_where_they_cannot_hold():
    config = str(ROOT / "config/synthetic/synthetic_pspnet18_pgd_at.yaml")
    with pytest.raises(UserError, match="adv_param_grads adds unscaled gradients"):
        load_config(config, ["adv_param_grads", "True", "amp", "fp16"])
    with pytest.raises(UserError, match="restate PIR-AT's L-inf attack; for l2 set"):
        load_config(config, ["adv_keep", "best_batch_loss", "adv_norm", "l2"])

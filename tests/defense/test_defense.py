"""SAT and DDC-AT steps against a plain, slow restatement of the original algorithm; SAM against a hand
computation; the exported DDC-AT model against cls1.

The restatements follow the original code's procedure literally: the whole batch is attacked, each
BIM step goes through the full model with parameter gradients, un-normalizes, steps, clips and
re-normalizes; the routed output is built from float indicators. Everything runs in float64 with
dropout 0, so "the same" means equal to rounding.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defense import DDCAT, PGDAT, SAT, NoDefense, StepSettings, TrainingAttack, train_step
from model import build_model, load_checkpoint_weights
from model.export import export
from util.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from util.errors import UserError
from util.optim import SAM, build_optimizer, set_lr

pytestmark = pytest.mark.device  # on CUDA when present (tests/conftest.py)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MEAN = torch.tensor(IMAGENET_MEAN).double().view(1, 3, 1, 1).to(DEVICE)  # the float32 constants, as the attack uses
STD = torch.tensor(IMAGENET_STD).double().view(1, 3, 1, 1).to(DEVICE)
EPS, STEPS, LR = 0.03, 3, 0.01


def _batch(seed: int = 0, n: int = 4, size: int = 33, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64, device="cpu").to(DEVICE)
    target = torch.randint(0, classes, (n, size, size), generator=g, device="cpu").to(DEVICE)
    target[:, :3] = 255
    return (pixels - MEAN) / STD, target


def _model(arch: str = "psp", ddcat: bool = False, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, 18, classes, dropout=0.0, ddcat=ddcat).double().train()


def reference_bim(model: nn.Module, logits_of, images, target) -> torch.Tensor:
    """The original's BIM: eval mode, full model with parameter gradients, mean CE, steps in
    normalized space through un-normalize / step / clip / re-normalize."""
    model.eval()
    x0 = images * STD + MEAN
    lo, hi = x0 - EPS, x0 + EPS
    adv = images.clone()
    for _ in range(STEPS):
        adv = adv.detach().requires_grad_(True)
        loss = F.cross_entropy(logits_of(adv), target, ignore_index=255)
        model.zero_grad()
        loss.backward()
        pixels = adv.detach() * STD + MEAN + EPS / STEPS * adv.grad.sign()
        pixels = torch.min(torch.max(pixels, lo), hi).clamp(0.0, 1.0)
        adv = (pixels - MEAN) / STD
    model.zero_grad()
    model.train()
    return adv.detach()


def reference_sat_step(model, optimizer, images, target):
    adv = reference_bim(model, model, images, target)
    half = images.size(0) // 2
    batch = torch.cat([images[:half], adv[half:]])
    out = model(batch)
    loss = F.cross_entropy(out["out"], target, ignore_index=255) + 0.4 * F.cross_entropy(
        out["aux"], target, ignore_index=255
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return batch


def reference_routed(model, x):
    """(routed logits, cls1 logits, router logits) by the original's float-indicator formula."""
    x_aux, feat = model.features(x)

    def up(t):
        return F.interpolate(t, size=x.shape[-2:], mode="bilinear", align_corners=True)

    cls1, cls2, mask = up(model.cls1(feat)), up(model.cls2(feat)), up(model.mask1(feat))
    to_cls2 = mask.max(1)[1].unsqueeze(1).expand_as(cls2).double()
    return to_cls2 * cls2 + (1 - to_cls2) * cls1, cls1, mask, up(model.aux_cls1(x_aux))


def reference_ddcat_step(model, optimizer, images, target):
    model.eval()
    with torch.no_grad():
        clean = reference_routed(model, images)[0].max(1)[1]
    adv = reference_bim(model, lambda x: reference_routed(model, x)[1], images, target)
    model.eval()
    with torch.no_grad():
        division = (reference_routed(model, adv)[0].max(1)[1] != clean).long()
    model.train()
    half = images.size(0) // 2
    batch = torch.cat([images[:half], adv[half:]])
    mask_target = torch.cat([division[:half], torch.zeros_like(division[half:])])
    routed, _, mask, aux = reference_routed(model, batch)
    main = F.cross_entropy(routed, target, ignore_index=255) + F.cross_entropy(mask, mask_target)
    loss = main + 0.4 * F.cross_entropy(aux, target, ignore_index=255)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return batch, mask_target, division


def _assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, rtol=0, atol=1e-10), name


@pytest.mark.parametrize("arch", ["psp", "aspp"])
def test_sat_step_matches_original(arch: str) -> None:
    images, target = _batch()
    model = _model(arch)
    reference = copy.deepcopy(model)
    opt, _ = build_optimizer("sgd", model, LR)
    ref_opt, _ = build_optimizer("sgd", reference, LR)
    expected = reference_sat_step(reference, ref_opt, images, target)

    defense = SAT(aux_weight=0.4, attack=TrainingAttack(EPS, STEPS))
    batch = defense.make_batch(model, images, target)
    assert torch.allclose(batch.images, expected, rtol=0, atol=1e-10)
    assert not torch.equal(batch.images[2:], images[2:]) and torch.equal(batch.images[:2], images[:2])
    delta = (batch.images - images) * STD
    assert delta.abs().max() <= EPS + 1e-9
    pixels = batch.images * STD + MEAN
    assert pixels.min() >= -1e-9 and pixels.max() <= 1 + 1e-9

    model.train()
    train_step(model, defense, opt, images, target, curr_iter=1)
    _assert_same_params(model, reference)
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in model.parameters())


def test_ddcat_step_matches_original() -> None:
    images, target = _batch(seed=1)
    model = _model("psp", ddcat=True)
    reference = copy.deepcopy(model)
    opt, _ = build_optimizer("sgd", model, LR)
    ref_opt, _ = build_optimizer("sgd", reference, LR)
    expected_batch, expected_mask, division = reference_ddcat_step(reference, ref_opt, images, target)
    assert 0 < division[:2].sum() < division[:2].numel()  # the router labels are not trivial

    defense = DDCAT(aux_weight=0.4, attack=TrainingAttack(EPS, STEPS))
    batch = defense.make_batch(model, images, target)
    assert torch.allclose(batch.images, expected_batch, rtol=0, atol=1e-10)
    assert torch.equal(batch.mask_target, expected_mask)
    assert model.training
    train_step(model, defense, opt, images, target, curr_iter=1)
    _assert_same_params(model, reference)


def test_ddcat_crafting_runs_only_what_it_needs() -> None:
    """cls1 once per attack step; cls2/mask1 (no grad) once for the clean half and once for the
    adversarial half; the aux head never; no parameter gradient."""
    model = _model("psp", ddcat=True)
    images, target = _batch(seed=2)
    calls = {name: [] for name in ("cls1", "cls2", "mask1", "aux_cls1", "layer0")}
    for name, rows in calls.items():
        getattr(model, name).register_forward_hook(lambda m, i, o, rows=rows: rows.append(i[0].shape[0]))
    DDCAT(attack=TrainingAttack(EPS, STEPS)).make_batch(model, images, target)
    assert calls["cls1"] == [4, 4, 4, 2]  # 3 attack steps (step 1 also serves the clean routed output)
    # + the routed output of the adversarial half
    assert calls["cls2"] == calls["mask1"] == [2, 2]  # clean half (step 1's features), adversarial half
    assert calls["aux_cls1"] == []
    assert calls["layer0"] == [4, 4, 4, 2]  # one trunk pass per step, one for the adversarial half
    assert all(p.grad is None for p in model.parameters())


def test_sat_attacks_only_the_second_half() -> None:
    model = _model("psp")
    images, target = _batch(n=5)
    rows = []
    model.layer0.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    batch = SAT(attack=TrainingAttack(EPS, STEPS)).make_batch(model, images, target)
    assert rows == [3, 3, 3] and torch.equal(batch.images[:2], images[:2])
    assert all(p.grad is None for p in model.parameters())


def test_random_start_and_step_size() -> None:
    model = _model("psp")
    images, target = _batch()
    attack = TrainingAttack(eps=0.05, steps=2, step_size=0.04, random_start=True)
    torch.manual_seed(3)
    a = SAT(attack=attack).make_batch(model, images, target).images
    torch.manual_seed(3)
    b = SAT(attack=attack).make_batch(model, images, target).images
    torch.manual_seed(4)
    c = SAT(attack=attack).make_batch(model, images, target).images
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a - images) * STD).abs().max() <= 0.05 + 1e-9
    ddcat = _model("psp", ddcat=True)
    torch.manual_seed(3)
    batch = DDCAT(attack=attack).make_batch(ddcat, images, target)
    assert batch.mask_target[2:].eq(0).all() and ((batch.images - images) * STD).abs().max() <= 0.05 + 1e-9


def test_zoom_factor_resizes_labels_before_crafting() -> None:
    torch.manual_seed(0)
    model = build_model("psp", 18, 4, zoom_factor=2, dropout=0.0, ddcat=True).double().train()
    images, target = _batch()
    batch = DDCAT(attack=TrainingAttack(EPS, STEPS)).make_batch(model, images, target)
    assert batch.target.shape == batch.mask_target.shape == (4, 9, 9)
    assert torch.isfinite(DDCAT().loss(model, batch).loss)


class _Tiny(nn.Module):
    """conv -> logits, with the SegNet parameter-group interface (no BN, no dropout)."""

    zoom_factor = 8

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        norm = [nn.BatchNorm2d(4)] if bn else []
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *norm, nn.Tanh())
        self.cls = nn.Conv2d(4, 3, 1)

    def backbone_modules(self):
        return [self.body]

    def head_modules(self):
        return [self.cls]

    def forward(self, x):
        out = self.cls(self.body(x))
        return {"out": out} if self.training else out


def _tiny_loss(model, images, target):
    return F.cross_entropy(model(images)["out"], target, ignore_index=255)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_hand_computation(adaptive: bool) -> None:
    images, target = _batch(n=2, size=9, classes=3)
    images = images.float()
    model = _Tiny().train()
    rho, lr = 0.05, 0.1
    # hand computation: w' = w - lr * grad L(w + e), e = rho * T^2 g / ||T g||, T = |w| or 1
    params = [p.detach().clone() for p in model.parameters()]
    probe = copy.deepcopy(model)
    grads = torch.autograd.grad(_tiny_loss(probe, images, target), list(probe.parameters()))
    scale_t = [p.abs() if adaptive else torch.ones_like(p) for p in params]
    norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(scale_t, grads)))
    with torch.no_grad():
        for p, w, t, g in zip(probe.parameters(), params, scale_t, grads):
            p.copy_(w + rho * t * t * g / norm)
    grads2 = torch.autograd.grad(_tiny_loss(probe, images, target), list(probe.parameters()))
    lrs = [lr] * 2 + [lr * 10] * 2  # body at base lr, cls at 10x
    expected = [w - rate * g for w, rate, g in zip(params, lrs, grads2)]

    opt, split = build_optimizer("sam", model, lr, momentum=0.0, weight_decay=0.0, sam_rho=rho, sam_adaptive=adaptive)
    assert isinstance(opt, SAM)
    set_lr(opt, lr, split)
    train_step(model, NoDefense(), opt, images, target, curr_iter=1)
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)


def test_sam_warmup_is_plain_sgd_and_bn_counts_the_batch_once() -> None:
    images, target = _batch(n=2, size=9, classes=3)
    images = images.float()
    sam_model, sgd_model = _Tiny(bn=True).train(), _Tiny(bn=True).train()
    sam, split = build_optimizer("sam", sam_model, 0.1, sam_rho=0.05)
    sgd, _ = build_optimizer("sgd", sgd_model, 0.1)
    for opt in (sam, sgd):
        set_lr(opt, 0.1, split)
    settings = StepSettings(sam_warmup_iters=1)
    train_step(sam_model, NoDefense(), sam, images, target, curr_iter=1, settings=settings)
    train_step(sgd_model, NoDefense(), sgd, images, target, curr_iter=1, settings=settings)
    _assert_same_params(sam_model, sgd_model)
    train_step(sam_model, NoDefense(), sam, images, target, curr_iter=2, settings=settings)
    train_step(sgd_model, NoDefense(), sgd, images, target, curr_iter=2, settings=settings)
    # both saw the same weights in the first forward of step 2; SAM's second forward (at w + e) must
    # not move the running statistics again
    bn_sam, bn_sgd = sam_model.body[1], sgd_model.body[1]
    assert not torch.allclose(sam_model.cls.weight, sgd_model.cls.weight)
    assert torch.equal(bn_sam.running_mean, bn_sgd.running_mean)
    assert torch.equal(bn_sam.running_var, bn_sgd.running_var)
    assert bn_sam.momentum == 0.1


def test_sam_stops_on_a_non_finite_loss_at_the_perturbed_weights_and_leaves_w() -> None:
    """Without fp16's scaler nothing would skip the step: the loss at w + e is checked, and w is restored
    bit for bit (also after a normal SAM step the ascent is undone by copy, not by subtraction)."""

    class NanAtSecondPass(NoDefense):
        calls = 0

        def loss(self, model, batch):
            step = super().loss(model, batch)
            self.calls += 1
            return step if self.calls == 1 else dataclasses.replace(step, loss=step.loss * float("nan"))

    images, target = _batch(n=2, size=9, classes=3)
    model = _Tiny().train()
    opt, _ = build_optimizer("sam", model, 0.1, sam_rho=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UserError, match=r"loss at SAM's w \+ e became nan at iteration 1"):
        train_step(model, NanAtSecondPass(), opt, images.float(), target, curr_iter=1)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    _tiny_loss(model, images.float(), target).backward()
    assert opt.ascend() and not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt.restore()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("arch", ["psp", "aspp"])
def test_exported_ddcat_model_is_the_plain_model_with_cls1(arch: str, tmp_path) -> None:
    ddcat = _model(arch, ddcat=True).float().eval()
    plain = build_model(arch, 18, 4, dropout=0.0).eval()
    assert sum(p.numel() for p in ddcat.parameters()) > sum(p.numel() for p in plain.parameters())
    src = tmp_path / "train_epoch_1.pth"
    torch.save(
        {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in ddcat.state_dict().items()}, "optimizer": {}}, src
    )
    export(str(src), str(tmp_path / "deploy.pth"))
    state = torch.load(tmp_path / "deploy.pth", weights_only=True)["state_dict"]
    assert sum(v.numel() for k, v in state.items() if k in dict(plain.named_parameters())) == sum(
        p.numel() for p in plain.parameters()
    )
    for path in (tmp_path / "deploy.pth", src):  # test.py loads either form
        load_checkpoint_weights(plain, str(path))
        x = torch.randn(1, 3, 33, 33)
        with torch.no_grad():
            assert torch.allclose(plain(x), ddcat(x), atol=1e-6)
    with pytest.raises(Exception, match="already exists"):
        export(str(src), str(tmp_path / "deploy.pth"))


def test_ddcat_model_starts_from_a_plain_checkpoint(tmp_path) -> None:
    plain = build_model("psp", 18, 4, dropout=0.0).eval()
    torch.save({"epoch": 3, "state_dict": plain.state_dict()}, tmp_path / "plain.pth")
    ddcat = build_model("psp", 18, 4, dropout=0.0, ddcat=True).eval()
    mask_before = ddcat.mask1[0].weight.clone()
    load_checkpoint_weights(ddcat, str(tmp_path / "plain.pth"))
    assert torch.equal(ddcat.cls1[0].weight, plain.cls[0].weight)
    assert torch.equal(ddcat.cls2[4].bias, plain.cls[4].bias)
    assert torch.equal(ddcat.aux_cls1[0].weight, plain.aux[0].weight)
    assert torch.equal(ddcat.mask1[0].weight, mask_before)
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.allclose(ddcat(x), plain(x), atol=1e-6)


def test_sam_at_separate_warmup_runs_at_the_constant_rate_and_sam_starts_with_fresh_momentum() -> None:
    """SAM-AT's schedule: the warm-up iterations step their own SGD at base_lr whatever the schedule says; SAM
    then steps the scheduled optimizer, whose momentum nobody has touched yet."""
    images, target = _batch(n=2, size=9, classes=3)
    model, reference = _Tiny().double().train(), _Tiny().double().train()
    sam, split = build_optimizer("sam", model, 0.1, sam_rho=0.05, head_mult=1.0, sam_warmup_separate=True)
    plain = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    settings = StepSettings(sam_warmup_iters=2)
    for it in (1, 2):
        set_lr(sam, 0.1 * (1 - it / 10), split, 1.0)  # the schedule moves; the warm-up ignores it
        train_step(model, NoDefense(), sam, images, target, curr_iter=it, settings=settings)
        plain.zero_grad()
        _tiny_loss(reference, images, target).backward()
        plain.step()
    _assert_same_params(model, reference)
    assert not sam.base.state  # SAM's SGD has no momentum yet
    train_step(model, NoDefense(), sam, images, target, curr_iter=3, settings=settings)
    assert sam.base.state and all(g["lr"] == pytest.approx(0.08) for g in sam.param_groups)
    restored = build_optimizer("sam", _Tiny(), 0.1, sam_rho=0.05, sam_warmup_separate=True)[0]
    restored.load_state_dict(sam.state_dict())  # checkpoints carry the warm-up optimizer too
    assert restored.warmup.state_dict()["state"].keys() == sam.warmup.state_dict()["state"].keys()


def test_sam_second_pass_can_update_bn_as_sam_at_does() -> None:
    """sam_second_pass_updates_bn: the forward at w + e runs in train mode with BN counting that batch again,
    restated here by hand (rho * g / ||g||, second forward, back to w, SGD step)."""
    images, target = _batch(n=2, size=9, classes=3)
    model, reference = _Tiny(bn=True).double().train(), _Tiny(bn=True).double().train()
    sam, split = build_optimizer("sam", model, 0.1, sam_rho=0.05, momentum=0.0, weight_decay=0.0)
    set_lr(sam, 0.1, split, 10.0)
    train_step(
        model, NoDefense(), sam, images, target, curr_iter=1, settings=StepSettings(sam_second_pass_updates_bn=True)
    )
    params = list(reference.parameters())
    grads = torch.autograd.grad(_tiny_loss(reference, images, target), params)
    scale = 0.05 / torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        saved = [p.clone() for p in params]
        for p, g in zip(params, grads):
            p.add_(g * scale)
    grads = torch.autograd.grad(_tiny_loss(reference, images, target), params)  # BN counts the batch again
    lrs = [0.1] * len(list(reference.body.parameters())) + [1.0] * len(list(reference.cls.parameters()))
    with torch.no_grad():
        for p, w, g, lr in zip(params, saved, grads, lrs):
            p.copy_(w - lr * g)
    _assert_same_params(model, reference)
    assert reference.body[1].num_batches_tracked == 2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_at_as_sam_at_adv_matches_a_restatement(norm: str) -> None:
    """SAM-AT's --adv (train_step 1, alpha = eps, no random start, model in train mode so BN counts the crafting
    forward too), restated: one step on delta, clamp to the ball and to [0, 1], then SGD on the whole batch."""
    images, target = _batch(n=2, size=9, classes=3)
    model, reference = _Tiny(bn=True).double().train(), _Tiny(bn=True).double().train()
    eps = 0.03 if norm == "linf" else 0.5
    attack = TrainingAttack(eps, 1, eps, False, norm, train_mode=True)
    sgd, split = build_optimizer("sgd", model, 0.1, momentum=0.0, weight_decay=0.0)
    set_lr(sgd, 0.1, split, 1.0)
    train_step(model, PGDAT(attack=attack), sgd, images, target, curr_iter=1)

    x = (images * STD + MEAN).requires_grad_(True)
    loss = F.cross_entropy(reference((x - MEAN) / STD)["out"], target, ignore_index=255)
    (grad,) = torch.autograd.grad(loss, x)
    if norm == "linf":
        delta = (eps * grad.sign()).clamp(-eps, eps)
    else:
        step = eps * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        norms = step.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = step * (eps / norms).clamp(max=1)  # SAM-AT's renorm to eps (torch's adds 1e-7 to the norm)
    adv = (x.detach() + delta).clamp(0, 1)
    reference.zero_grad()
    _tiny_loss(reference, (adv - MEAN) / STD, target).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p.sub_(0.1 * p.grad)
    _assert_same_params(model, reference)
    assert reference.body[1].num_batches_tracked == 2  # the crafting forward counted in train mode


@pytest.mark.parametrize("defense", [NoDefense(), SAT(attack=TrainingAttack(EPS, STEPS))])
def test_a_batch_without_labelled_pixels_contributes_no_loss(defense) -> None:
    """All pixels ignore_label: loss 0 (not 0 / 0 = nan that stopped training with advice to lower base_lr), no
    gradient, so only momentum and weight decay move the weights; training goes on."""
    images, target = _batch(n=2, size=9, classes=3)
    model = _Tiny().double().train()
    sgd, _ = build_optimizer("sgd", model, 0.1, momentum=0.0, weight_decay=0.0)
    before = [p.clone() for p in model.parameters()]
    step = train_step(model, defense, sgd, images, torch.full_like(target, 255), curr_iter=1)
    assert step.loss.item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(train_step(model, defense, sgd, images, target, curr_iter=2).loss)


def test_a_diverged_loss_names_its_likely_causes() -> None:
    images, target = _batch(n=2, size=9, classes=3)
    model = _Tiny().double().train()
    with torch.no_grad():
        model.cls.weight.fill_(float("inf"))
    sgd, _ = build_optimizer("sgd", model, 0.1)
    with pytest.raises(UserError, match=r"became nan at iteration 1: the weights diverged \(lower base_lr.*fp16"):
        train_step(model, NoDefense(), sgd, images, target, curr_iter=1)


def test_trades_step_matches_a_restatement() -> None:
    """TRADES per pixel, restated: from x + 0.001 N(0, 1), sign steps on KL(p(x) || p(x')) in eval mode, then
    CE(clean) + beta * mean over valid pixels of KL(p(x) || p(x')) in train mode, one SGD step (float64)."""
    from defense import TRADES

    images, target = _batch(n=2, size=9, classes=3)
    model, reference = _Tiny(bn=True).double().train(), _Tiny(bn=True).double().train()
    sgd, split = build_optimizer("sgd", model, 0.1, momentum=0.0, weight_decay=0.0)
    set_lr(sgd, 0.1, split, 1.0)
    torch.manual_seed(5)
    train_step(model, TRADES(attack=TrainingAttack(EPS, STEPS), beta=2.0), sgd, images, target, curr_iter=1)

    torch.manual_seed(5)
    valid = (target != 255).double()
    x0 = images * STD + MEAN
    reference.eval()
    with torch.no_grad():
        p = reference(images).softmax(1)
    x = (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)
    for _ in range(STEPS):
        x.requires_grad_(True)
        kl = (F.kl_div(reference((x - MEAN) / STD).log_softmax(1), p, reduction="none").sum(1) * valid).sum()
        (grad,) = torch.autograd.grad(kl, x)
        x = torch.min(torch.max(x.detach() + EPS / STEPS * grad.sign(), x0 - EPS), x0 + EPS).clamp(0, 1)
    reference.train()
    clean = reference(images)["out"]
    kl = F.kl_div(reference((x - MEAN) / STD)["out"].log_softmax(1), clean.softmax(1), reduction="none").sum(1)
    loss = F.cross_entropy(clean, target, ignore_index=255) + 2.0 * (kl * valid).sum() / valid.sum()
    reference.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p_ in reference.parameters():
            p_.sub_(0.1 * p_.grad)
    _assert_same_params(model, reference)
